#!/usr/bin/env python3
"""Try the whole flow offline, on this machine, in a few seconds.

Starts an "upstream" registry and Helm repository serving a small stand-in release (an operator chart and a
platform chart installed through a custom resource, six images), and an "internal" registry (TLS, htpasswd)
and Helm repository (nginx, PUT behind basic auth); then runs, printing each command:

  wsm list -> wsm download -> wsm verify -> wsm push -> wsm check -> helm template with the written values

where the offline half (verify, push) runs the bundle's own tools/wsm.pyz on the system's python3, as a site
would: `/usr/bin/python3 -I bundle/tools/wsm.pyz verify bundle`, nothing installed. Everything stays under
the directory it prints (servers are stopped at the end). Needs what
scripts/test-prereqs.sh installs.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from e2e import Flow  # noqa: E402


def main() -> int:
    workdir = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="wsm-try-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with Flow(workdir) as flow:
        print("== the connected side")
        flow.upstream()
        print("\n".join(flow.list_images()))
        flow.download()
        print("== the offline side")
        flow.internal()
        print(flow.verify())
        print(flow.push())
        print(flow.check().stdout)
        print("== helm template with the written values: every image comes from the internal registry")
        for chart, images in flow.rendered_images().items():
            print(f"{chart}: " + ", ".join(images))
    print(f"everything is under {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
