"""Where a model runs when it is not in this process: a Linux board over ssh, an Android device
over adb, an emulated arm64 device under QEMU; and the job protocol edgekit's own runner speaks."""
