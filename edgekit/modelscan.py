"""What a SavedModel's graph could do besides computing: the TensorFlow ops that read or write
files, print to files, reach other processes or run Python, found before the graph ever runs.

A SavedModel is a program: `tf.saved_model.load` restores its functions and edgekit then calls
them (predict, verification, conversion). `file_ops(path)` lists every op of `FILE_OPS` in the
functions the model can run (its signatures, its restored functions and what they call); the
checkpoint ops of the SavedModel's own saver (SaveV2 / RestoreV2 in the functions only the saver
uses, which loading does not run) are not counted. keras_compat.load_model refuses a SavedModel
with any of them unless unsafe=True. This is a deny list of known ops, not a sandbox: docs/security.md.
"""

from __future__ import annotations

import os
from pathlib import Path

# Ops that touch the file system (or a remote one through its URL schemes: gs://, s3://, hdfs://),
# other processes or Python; grouped as in TensorFlow's raw ops.
FILE_OPS = frozenset(
    {
        # files
        "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "InitializeTableFromTextFile",
        "InitializeTableFromTextFileV2", "LoadAndRemapMatrix", "DecodeProtoV2", "EncodeProto",
        # checkpoints (outside the saver's own functions)
        "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
        "MergeV2Checkpoints",
        # summaries and debugging output written to files
        "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary",
        "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
        "WriteRawProtoSummary", "ImportEvent", "FlushSummaryWriter", "CloseSummaryWriter",
        "SummaryWriter", "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount",
        "DebugNumericSummary", "DebugNumericSummaryV2",
        # data sets and readers over files
        "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset",
        "FixedLengthRecordDatasetV2", "MatchingFilesDataset", "SaveDataset", "SaveDatasetV2",
        "LoadDataset", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord", "SnapshotDataset",
        "SnapshotDatasetV2", "LMDBDataset", "ExperimentalLMDBDataset", "CSVDataset",
        "CSVDatasetV2", "ExperimentalCSVDataset", "SqlDataset", "ExperimentalSqlDataset",
        "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2",
        "TFRecordReader", "TFRecordReaderV2", "FixedLengthRecordReader",
        "FixedLengthRecordReaderV2", "LMDBReader", "IdentityReader", "IdentityReaderV2",
        # file-system configuration, other processes and Python
        "FileSystemSetConfiguration", "GcsConfigureCredentials", "GcsConfigureBlockCache",
        "RemoteCall", "PyFunc", "PyFuncStateless", "EagerPyFunc",
    }
)  # fmt: skip

# The only file ops a SavedModel's own saver may hold (in functions nothing else calls).
_SAVER_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints"})


def _called(node) -> list[str]:
    """Names of the functions a NodeDef calls through its attributes (f, body, branches ...)."""
    names = []
    for attr in node.attr.values():
        if attr.HasField("func"):
            names.append(attr.func.name)
        names.extend(f.name for f in attr.list.func)
    return names


def _print_to_file(node) -> bool:
    stream = node.attr.get("output_stream")
    return node.op == "PrintV2" and stream is not None and stream.s.decode().startswith("file")


def file_ops(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(op, function) for every file-touching op the SavedModel at `path` can run; [] if none.

    Reads saved_model.pb (or .pbtxt) with TensorFlow's protobuf classes; runs nothing."""
    from tensorflow.core.protobuf import saved_model_pb2

    p = Path(path)
    proto = saved_model_pb2.SavedModel()
    if (p / "saved_model.pb").is_file():
        proto.ParseFromString((p / "saved_model.pb").read_bytes())
    else:
        from google.protobuf import text_format

        text_format.Parse((p / "saved_model.pbtxt").read_text(), proto)
    found: set[tuple[str, str]] = set()
    for mg in proto.meta_graphs:
        functions = {f.signature.name: f for f in mg.graph_def.library.function}
        saver_roots = {
            mg.saver_def.save_tensor_name.split(":")[0],
            mg.saver_def.restore_op_name.split(":")[0],
        } - {""}

        def reach(start: list[str], functions=functions) -> set[str]:
            seen: set[str] = set()
            todo = list(start)
            while todo:
                name = todo.pop()
                if name in seen or name not in functions:
                    continue
                seen.add(name)
                for n in functions[name].node_def:
                    todo.extend(_called(n))
            return seen

        top = list(mg.graph_def.node)
        saver_only = reach([c for n in top if n.name in saver_roots for c in _called(n)])
        other = reach(
            [c for n in top if n.name not in saver_roots for c in _called(n)]
            + list(mg.object_graph_def.concrete_functions)
        )
        saver_only -= other
        for n in top:
            if n.op in FILE_OPS or _print_to_file(n):
                found.add((n.op, "the top-level graph"))
        for name, fn in functions.items():
            for n in fn.node_def:
                if (n.op in FILE_OPS or _print_to_file(n)) and not (
                    name in saver_only and n.op in _SAVER_OPS
                ):
                    found.add((n.op, name))
    return sorted(found)
