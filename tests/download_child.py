"""Run `wsm._download.download` in a child process, for what a test cannot do to itself: a SIGKILL halfway
through a transfer, or a file-size limit (RLIMIT_FSIZE) standing in for a full disk.

    python3 tests/download_child.py '{"bundle": DIR, "images": [REF, ...], "kill_after": BYTES,
                                      "file_size_limit": BYTES, "concurrency": N, "platforms": [...]}'

Prints the report as JSON on stdout; a WsmError is printed on stderr (its one line) with exit status 1.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from wsm._download import download  # noqa: E402
from wsm._exceptions import WsmError  # noqa: E402
from wsm._http import TransportOptions  # noqa: E402
from wsm._model import ResolvedImage  # noqa: E402
from wsm._reference import Reference  # noqa: E402
from wsm._remote import Platform, RegistryClient, RegistryOptions  # noqa: E402


class KillingClient(RegistryClient):
    """The real client, killed with SIGKILL (no cleanup at all) once `kill_after` blob bytes have landed."""

    def __init__(self, options: RegistryOptions, kill_after: int | None):
        super().__init__(options)
        self.kill_after = kill_after
        self.landed = 0

    def fetch_blob(self, ref, descriptor, dest, progress=None):
        def hook(count: int) -> None:
            if progress:
                progress(count)
            self.landed += max(count, 0)
            if self.kill_after is not None and self.landed >= self.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

        return super().fetch_blob(ref, descriptor, dest, progress=hook)


def main(args: dict) -> int:
    if args.get("file_size_limit"):
        limit = int(args["file_size_limit"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it fail with EFBIG
    options = RegistryOptions(transport=TransportOptions(plain_http=True, retries=2, backoff=0.01))
    images = [ResolvedImage(Reference.parse(ref), "test") for ref in args["images"]]
    platforms = [Platform.parse(p) for p in args["platforms"]] if args.get("platforms") else None
    with KillingClient(options, args.get("kill_after")) as client:
        try:
            report = download(
                images, [], Path(args["bundle"]), client=client, platforms=platforms,
                concurrency=int(args.get("concurrency", 1)),
            )
        except WsmError as error:
            print(error, file=sys.stderr)
            return 1
    print(json.dumps(report.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
