import signal
import sys

from harness.cli import main

# A SIGTERM (kill, a job scheduler, a CI timeout) unwinds like Ctrl-C, so the running worker's
# process group is killed with us instead of training on as an orphan (launch.run_job).
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

raise SystemExit(main())
