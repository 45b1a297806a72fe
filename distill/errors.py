"""The two kinds of failure a user sees as one line, never as a traceback.

`UserError`: the user's input is wrong (a file, a column, a config field, a flag, an output
folder another run holds); exit code 2. `EnvFailure`: the input is fine but the world failed
(an endpoint down or not answering, a full disk); exit code 1, and rerunning the same command
once the cause is fixed finishes the work.
"""


class UserError(Exception):
    """Bad input from the user (file, column, config field, flag).

    The message names the file / field / row; the CLI prints it on one line and exits 2,
    so no traceback is shown for mistakes the user can fix.
    """


class EnvFailure(Exception):
    """The environment failed (a dead or silent endpoint, no space left on a disk).

    The message names the endpoint or path and what to do; the CLI prints it on one line and
    exits 1. Whatever finished before the failure is kept, so a rerun resumes.
    """
