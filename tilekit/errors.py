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


class BackendError(TilekitError):
    """A backend's compiler (NVRTC, hipcc, the OpenCL driver, Triton) or tool failed on a kernel.

    ``kernel``, ``backend``, ``target``, ``filename`` and ``lineno`` (the kernel's ``def``) say where;
    ``detail`` is the tool's own message (its log, and the generated source where that helps). The
    backends raise it through ``tilekit.backends.toolchain.reported_as``, which fills in the location."""

    def __init__(self, detail, *, kernel=None, backend=None, target=None, filename=None, lineno=None):
        self.detail, self.kernel, self.backend, self.target = detail, kernel, backend, target
        self.filename, self.lineno = filename, lineno
        where = f"{filename}:{lineno}: " if filename else ""
        what = ""
        if kernel is not None:
            on = f" for {target}" if target else ""
            what = f"kernel '{kernel}' failed on the {backend} backend{on}: "
        super().__init__(f"{where}{what}{detail}")

    def located(self, kernel, backend, target=None):
        """This error again, naming ``kernel`` (a tilekit kernel), ``backend`` and ``target``."""
        from .backends.toolchain import kernel_location
        filename, lineno = kernel_location(kernel)
        return type(self)(self.detail, kernel=getattr(kernel, "__name__", str(kernel)), backend=backend,
                          target=target, filename=filename, lineno=lineno)


class ToolchainError(BackendError):
    """An external tool (cuobjdump, nvdisasm, hipcc) ran but gave no usable output; the message lists what
    was tried and what each attempt said."""
