"""``python -m pipeline``: see ``pipeline.cli``.

The process leaves without tearing the interpreter down once its work is done. Tearing down
torch, MLflow, Optuna and matplotlib (freeing every module's objects one by one) took 1.7 s
of the 2-core machine after a smoke job had ended its job run, and 17 s of the H200 host's
main job: a worker's exit is on the job's critical path (the report waits for every worker),
and the parent's is the user's wait. Everything that matters still runs first, in Python's
own order: non-daemon threads and executors are joined (the figure uploads), then the atexit
handlers (MLflow's, logging's), and only then, as the last handler, the streams are flushed
and the process ends with the command's exit status.
"""

import atexit
import os
import sys

_exit_code: list[int] = []


@atexit.register  # registered first, so run last (atexit runs handlers in reverse order)
def _leave_without_teardown() -> None:
    if not _exit_code:  # an uncaught exception or a signal: the normal shutdown reports it
        return
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to say
            pass
    os._exit(_exit_code[0])


from pipeline.cli import main  # noqa: E402 - after the handler, so that it runs last

if __name__ == "__main__":
    _exit_code.append(main())
    sys.exit(_exit_code[0])
