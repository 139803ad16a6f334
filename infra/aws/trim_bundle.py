"""Drop from the Lambda bundle what the python3.11 runtime already provides.

``chalice package`` vendors every transitive requirement: PynamoDB pulls in botocore (21 MiB,
16 MiB zipped), which the Lambda runtime ships with boto3 — a second, different botocore in the
zip would also shadow the runtime's one under the runtime's boto3.  Without it the bundle stays
well under the 50 MiB that `chalice deploy` can upload directly (tests/integration/test_packaging.py).
"""

from __future__ import annotations

import os
import sys
import zipfile

#: top-level names the Lambda python3.11 runtime provides (boto3 and its dependencies)
RUNTIME_PROVIDED = ("botocore", "boto3", "s3transfer")


def provided(name: str) -> bool:
    top = name.split("/", 1)[0]
    return any(top == pkg or (top.startswith(pkg + "-") and top.endswith(".dist-info")) for pkg in RUNTIME_PROVIDED)


def trim(path: str) -> int:
    tmp = path + ".tmp"
    dropped = 0
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if provided(info.filename):
                dropped += 1
                continue
            dst.writestr(info, src.read(info.filename))
    os.replace(tmp, path)
    return dropped


if __name__ == "__main__":
    print(f"left {trim(sys.argv[1])} runtime-provided files out of {sys.argv[1]}")
