"""The pipeline's heavy optional imports wait for their first use (cold start)."""

from __future__ import annotations

import json
import subprocess
import sys

from promptcal.pipeline import DEFERRED_IMPORTS

CHILD = """
import json, sys
import promptcal.pipeline.task, promptcal.io.products, promptcal.refcat
from promptcal.pipeline import DEFERRED_IMPORTS
before = [m for m in DEFERRED_IMPORTS if m in sys.modules]
from promptcal.core.kernel_cache import start_kernel_preload
start_kernel_preload(sys.argv[1], imports=DEFERRED_IMPORTS).join()
after = [m for m in DEFERRED_IMPORTS if m in sys.modules]
print(json.dumps({"before": before, "after": after}))
"""


def test_deferred_modules_load_only_in_the_preload_thread(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "no-manifest.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"before": [], "after": list(DEFERRED_IMPORTS)}
