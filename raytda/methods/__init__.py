"""Attribution methods (one class per method, one file each) and the Method spec.

``register_method`` adds a method from user code; see :class:`AttributionMethod`.
"""

from raytda.methods.base import METHODS, AttributionMethod, method_class, register_method
from raytda.methods.spec import Method, as_method

__all__ = ["METHODS", "AttributionMethod", "Method", "as_method", "method_class", "register_method"]

# The paper's methods register themselves; importing any part of the package loads them.
from raytda.methods import builtin  # noqa: E402, F401, I001
