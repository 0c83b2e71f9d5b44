"""`python -m tests.servers.crashing_rotate CONFIG NAME STEP PHASE`: run one
rotation exactly as `secretd rotate -c CONFIG --no-agent NAME` does, and
SIGKILL this process at the given point - right after STEP took effect
(PHASE "applied") or after its progress was written (PHASE "recorded").

The crash tests use it to stop a rotator at every step boundary, the way a
power cut or the OOM killer would, and then finish the job with the real CLI.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from secretd.config import load_config
from secretd.logs import configure_logging
from secretd.model import SecretName
from secretd.rotation.direct import rotate_directly
from secretd.rotation.model import Step


def main(config_path: str, name: str, step: str, phase: str) -> int:
    def checkpoint(done: Step, where: str) -> None:
        if done.value == step and where == phase:
            os.kill(os.getpid(), signal.SIGKILL)

    config = load_config(Path(config_path))
    configure_logging("warning")
    asyncio.run(rotate_directly(config, SecretName(name), checkpoint=checkpoint))
    return 3  # the crash point was never reached


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
