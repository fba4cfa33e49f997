from twisted.application.service import ServiceMaker

cliproxyd = ServiceMaker(
    "cliproxyd",
    "cliproxyd.tap",
    "Credential-pooling LLM proxy (OpenAI, Claude and Gemini compatible).",
    "cliproxyd",
)
