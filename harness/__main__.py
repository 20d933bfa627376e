import signal
import sys

from harness.errors import Interrupted

_received = []


def _terminate(signum, frame):
    # A SIGTERM (kill, a job scheduler, a CI timeout) unwinds like Ctrl-C: the running worker's
    # process group is killed with us (harness.launch) and the run in progress is recorded as
    # interrupted (harness.benchmark.execute). A second SIGTERM while unwinding is ignored.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _received.append(signum)
    raise Interrupted(signum)


signal.signal(signal.SIGTERM, _terminate)

from harness.cli import main

try:
    code = main()
except KeyboardInterrupt:  # before or after cli.main's own handler
    print("interrupted", file=sys.stderr)
    code = 130
raise SystemExit(128 + _received[0] if _received else code)
