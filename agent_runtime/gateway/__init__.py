"""The HTTP gateway (``agent-runtime serve``): a stateless FastAPI app in front of the runtime.
See docs/gateway.md."""
