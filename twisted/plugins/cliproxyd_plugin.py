from twisted.application.service import ServiceMaker

cliproxyd = ServiceMaker(
    "cliproxyd",
    "cliproxyd.tap",
    "Credential-pooling LLM proxy with an OpenAI-compatible API.",
    "cliproxyd",
)
