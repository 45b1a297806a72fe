"""User errors: problems with the user's input, reported as one line with exit code 2."""


class UserError(Exception):
    """Bad input from the user (file, column, config field, flag).

    The message names the file / field / row; the CLI prints it on one line and exits 2,
    so no traceback is shown for mistakes the user can fix.
    """
