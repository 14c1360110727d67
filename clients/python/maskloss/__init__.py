"""maskloss -- evaluate masked, weighted losses on a maskloss-server from Python.

Standard library only; numpy is optional (with it, arrays travel as binary tensors and come
back as numpy arrays; without it, nested lists both ways).

    from maskloss import Client
    client = Client("http://127.0.0.1:8080")
    loss = client.loss("sigmoid_cross_entropy", labels=y, logits=x, weights=mask)

Monitors (a loss tracked over time, per slice, with drift) go over /v1/monitors as JSON,
numpy arrays as base64 tensors:

    ctr = client.monitor("ctr")
    ctr.create({"loss": "sigmoid_cross_entropy", "slices": ["model_version"]})
    ctr.observe(labels=y, logits=x, mask=mask, slice={"model_version": "7"}, id="batch-1")
    ctr.show()["windows"]["5m"]["loss"]

On a shared endpoint (a server with --auth-file, over HTTPS), give the token and, for a
certificate the system does not trust, its PEM file; the token defaults to $MASKLOSS_TOKEN:

    client = Client("https://maskloss.example.org:8443", token=token, cafile="cert.pem")

A refused request raises MasklossError (status, code, field, retry_after); 429 and 503 are
retried first (Client(retries=3)) where a repeat is safe.
"""
from .client import OUTPUTS, Client, MasklossError, Monitor

__version__ = "0.1.0"
__all__ = ["Client", "Monitor", "MasklossError", "OUTPUTS", "__version__"]
