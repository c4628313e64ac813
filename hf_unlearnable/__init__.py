"""hf_unlearnable: make an image dataset unlearnable before releasing it.

    protected = ds.map(protect(method="em"), batched=True)
    noise = craft(ds, "em", mode="classwise"); protected = ds.map(protect(noise=noise), batched=True)
    report = evaluate(protected, test, clean=ds, mix=[0.5, 1.0])
    surrogate = train_surrogate(ds, epochs=12)      # your own classes, for protect(method="em", surrogate=...)
"""

from ._version import __version__  # noqa: E402

from .errors import ProtectionError  # noqa: E402
from .noise import Noise, load_noise  # noqa: E402
from .surrogates import Surrogate  # noqa: E402
from .surrogates.train import train_surrogate  # noqa: E402
from .transform import protect  # noqa: E402
from ._craft import craft  # noqa: E402
from .evaluate import Report, evaluate  # noqa: E402
from .certify import Certificate, certify  # noqa: E402
from .hub import push_protected  # noqa: E402

__all__ = ["protect", "craft", "evaluate", "certify", "load_noise", "push_protected", "train_surrogate", "Certificate", "Noise", "Surrogate", "Report", "ProtectionError",
           "__version__"]
