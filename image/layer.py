#!/usr/bin/env python3
"""Writes the image's one filesystem layer as a reproducible tar.

Every header field that could vary between two builds of the same commit is
fixed here rather than read from disk: entry order (sorted), mtime (the
commit time, SOURCE_DATE_EPOCH), owner (0:0, no names), mode (set per entry,
not taken from the checkout's umask). The same inputs therefore give the same
bytes, and so the same layer digest, on any machine.

    layer.py OUT.tar EPOCH DEST=SRC:MODE [DEST=SRC:MODE ...]
"""
import io
import sys
import tarfile


def main(argv):
    out, epoch, specs = argv[1], int(argv[2]), argv[3:]
    files = {}
    for spec in specs:
        dest, rest = spec.split("=", 1)
        src, mode = rest.rsplit(":", 1)
        files[dest.strip("/")] = (src, int(mode, 8))
    # Parent directories, each once, 0755 like any base image's.
    dirs = set()
    for dest in files:
        parts = dest.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))

    def header(name, kind, mode, size=0):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size = kind, mode, size
        info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
        return info

    # USTAR: no PAX records (which could carry atime/ctime), every name here fits.
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(dirs | set(files)):
            if name in files:
                src, mode = files[name]
                with open(src, "rb") as f:
                    data = f.read()
                tar.addfile(header(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
            else:
                tar.addfile(header(name + "/", tarfile.DIRTYPE, 0o755))


if __name__ == "__main__":
    main(sys.argv)
