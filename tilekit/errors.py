"""The errors tilekit raises. Each names the user's source location where one is known."""


class TilekitError(Exception):
    pass


class CompileError(TilekitError):
    """A kernel uses something outside the language, or uses it wrongly.

    ``filename``/``lineno`` point at the user's kernel source.
    """

    def __init__(self, message, filename=None, lineno=None, source_line=None):
        self.message = message
        self.filename = filename
        self.lineno = lineno
        self.source_line = source_line
        where = f"{filename}:{lineno}: " if filename else ""
        text = f"{where}{message}"
        if source_line:
            text += f"\n    {source_line.strip()}"
        super().__init__(text)


class OutOfBoundsError(TilekitError):
    """The reference executor caught an access outside a tensor that no mask covers."""


class BackendUnavailable(TilekitError):
    """A backend cannot run here; the message says why and what to install."""
