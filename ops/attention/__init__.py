"""attention: ``tilekit::attention`` (FlashAttention-2 forward) and ``tilekit::attention_backward``, written in
the tilekit DSL. Shape tuple for tuning: ``B,Hq,Hkv,Sq,Skv,D``. See README.md."""
from .op import attention, attention_reference, attention_varlen, kernel_example  # noqa: F401
from .decode import attention_decode  # noqa: F401
from . import tuning  # noqa: F401,E402  (registers attention.fwd, attention.bwd_dkdv, attention.bwd_dq)
