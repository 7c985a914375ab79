"""Python SDK for forkd: a client of ``forkd serve``'s REST API.

    from forkd import Sandbox
    with Sandbox.create() as sb:
        print(sb.commands.run("uname -a").stdout)
        kids = sb.branch(4)

See sdk/python/README.md and docs/rest-api.md.
"""

__version__ = "0.1.0"

from .errors import (BadRequest, CommandTimeout, Conflict, ConnectionFailed,  # noqa: E402
                     ForkdError, Forbidden, MethodNotAllowed, NotFound, PayloadTooLarge,
                     RequestTimeout, ServerError, TooManyRequests, Unauthorized, Unavailable,
                     Unsupported)
from .models import (VM, BranchResult, CommandResult, Image, Limits, Snapshot,  # noqa: E402
                     TreeNode)
from .controller import Controller  # noqa: E402
from .sandbox import Sandbox  # noqa: E402

__all__ = [
    "__version__", "Controller", "Sandbox",
    "VM", "Limits", "Snapshot", "Image", "BranchResult", "TreeNode", "CommandResult",
    "ForkdError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "MethodNotAllowed",
    "Conflict", "PayloadTooLarge", "TooManyRequests", "ServerError", "Unavailable",
    "Unsupported", "ConnectionFailed", "RequestTimeout", "CommandTimeout",
]
