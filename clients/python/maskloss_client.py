"""maskloss_client -- the Python client's first module, kept for the code that imports it: the
package `maskloss` (clients/python/maskloss) is the client now. One difference: this Client
does not retry by itself (retries=0), as it never did; maskloss.Client retries 429 and 503.

    from maskloss_client import Client
    client = Client("http://127.0.0.1:8080")
    loss = client.loss("sigmoid_cross_entropy", labels=y, logits=x, weights=mask)
"""
import os
import sys

try:
    import maskloss
except ImportError:  # (run from a checkout, the package beside this file not installed)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import maskloss

from maskloss import OUTPUTS, MasklossError, Monitor

__all__ = ["Client", "Monitor", "MasklossError", "OUTPUTS"]


class Client(maskloss.Client):
    __doc__ = maskloss.Client.__doc__

    def __init__(self, url="http://127.0.0.1:8080", timeout=60.0, token=None, cafile=None,
                 retries=0, **kw):
        super().__init__(url, timeout, token, cafile, retries=retries, **kw)
