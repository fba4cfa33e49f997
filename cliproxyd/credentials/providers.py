"""
What cliproxyd knows about each OAuth provider whose CLI accounts it pools:
where its authorization and token endpoints are, the public client of the
CLI tool it stands in for, and how early its access tokens are refreshed.

The client ids (and Google's installed-app secrets, which Google documents
as not secret) are those the CLI tools themselves ship; a refresh token can
only be used with the client that obtained it, so these must match.
"""

from __future__ import annotations

from attrs import evolve, frozen

HOUR = 3600.0
DAY = 24 * HOUR

GOOGLE_AUTHORIZE = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"
GOOGLE_USERINFO = "https://www.googleapis.com/oauth2/v2/userinfo?alt=json"


@frozen
class OAuthProvider:
    """
    @ivar type: the C{type} of its credential files.
    @ivar token_body: C{"json"} or C{"form"}: how the token endpoint wants its body.
    @ivar lead: refresh an access token this many seconds before it expires
        (or, with no expiry known, this long after the last refresh).
    @ivar callback_port, callback_path: where the local login callback listens.
    @ivar authorize_params: extra query parameters of the authorization URL.
    @ivar userinfo_url: where login reads the account's email with the new
        access token; empty when the token response itself names the account.
    """

    type: str
    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...]
    token_body: str
    lead: float
    callback_port: int
    callback_path: str
    authorize_params: tuple[tuple[str, str], ...] = ()
    userinfo_url: str = ""
    #: RFC 8628 device authorization endpoint, for the providers whose logins are device flows
    device_url: str = ""
    #: OpenID discovery document naming the token and device endpoints (xAI), used when no
    #: token endpoint is known otherwise (a file's C{token_endpoint})
    discovery_url: str = ""
    #: the token endpoint wants the client as HTTP Basic authentication too (iFlow)
    basic_auth: bool = False
    #: how the account is refreshed: C{"refresh_token"}, or C{"jwt-bearer"} for a Google service
    #: account, whose file holds a private key instead of a refresh token (Vertex)
    grant: str = "refresh_token"
    #: iFlow: its platform's API-key endpoint, for the browser-cookie login (L{cliproxyd.credentials.iflow_cookie})
    platform_url: str = ""


CLAUDE = OAuthProvider(
    type="claude",
    authorize_url="https://claude.ai/oauth/authorize",
    token_url="https://platform.claude.com/v1/oauth/token",
    client_id="9d1c250a-e61b-44d9-88ed-5944d1962f5e",
    client_secret="",
    scopes=("user:profile", "user:inference", "user:sessions:claude_code", "user:mcp_servers",
            "user:file_upload"),
    token_body="json",
    lead=4 * HOUR,
    callback_port=54545,
    callback_path="/callback",
    authorize_params=(("code", "true"),),
)

CODEX = OAuthProvider(
    type="codex",
    authorize_url="https://auth.openai.com/oauth/authorize",
    token_url="https://auth.openai.com/oauth/token",
    client_id="app_EMoamEEZ73f0CkXaXp7hrann",
    client_secret="",
    scopes=("openid", "email", "profile", "offline_access"),
    token_body="form",
    lead=5 * DAY,
    callback_port=1455,
    callback_path="/auth/callback",
    authorize_params=(("id_token_add_organizations", "true"), ("codex_cli_simplified_flow", "true")),
)

GEMINI_CLI = OAuthProvider(
    type="gemini-cli",
    authorize_url=GOOGLE_AUTHORIZE,
    token_url=GOOGLE_TOKEN,
    client_id="681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com",
    client_secret="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",
    scopes=("https://www.googleapis.com/auth/cloud-platform",
            "https://www.googleapis.com/auth/userinfo.email",
            "https://www.googleapis.com/auth/userinfo.profile"),
    token_body="form",
    # Google access tokens live an hour. CLIProxyAPI refreshes Gemini CLI
    # tokens on the request path; we refresh them in the background instead.
    lead=5 * 60.0,
    callback_port=8085,
    callback_path="/oauth2callback",
    authorize_params=(("access_type", "offline"), ("prompt", "consent")),
    userinfo_url=GOOGLE_USERINFO,
)

ANTIGRAVITY = OAuthProvider(
    type="antigravity",
    authorize_url=GOOGLE_AUTHORIZE,
    token_url=GOOGLE_TOKEN,
    client_id="1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com",
    client_secret="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",
    scopes=("https://www.googleapis.com/auth/cloud-platform",
            "https://www.googleapis.com/auth/userinfo.email",
            "https://www.googleapis.com/auth/userinfo.profile",
            "https://www.googleapis.com/auth/cclog",
            "https://www.googleapis.com/auth/experimentsandconfigs"),
    token_body="form",
    lead=5 * 60.0,
    callback_port=51121,
    callback_path="/oauth-callback",
    authorize_params=(("access_type", "offline"), ("prompt", "consent")),
    userinfo_url=GOOGLE_USERINFO,
)

XAI = OAuthProvider(
    type="xai",
    authorize_url="",
    # Found through discovery unless the file names its token_endpoint.
    token_url="",
    client_id="b1a00492-073a-47ea-816f-4c329264a828",
    client_secret="",
    scopes=("openid", "profile", "email", "offline_access", "grok-cli:access", "api:access"),
    token_body="form",
    lead=5 * 60.0,
    callback_port=0,
    callback_path="",
    discovery_url="https://auth.x.ai/.well-known/openid-configuration",
)

KIMI = OAuthProvider(
    type="kimi",
    authorize_url="",
    token_url="https://auth.kimi.com/api/oauth/token",
    client_id="17e5f671-d194-4dfb-9706-5516cb48c098",
    client_secret="",
    scopes=(),
    token_body="form",
    lead=5 * 60.0,
    callback_port=0,
    callback_path="",
    device_url="https://auth.kimi.com/api/oauth/device_authorization",
)

QWEN = OAuthProvider(
    type="qwen",
    authorize_url="",
    token_url="https://chat.qwen.ai/api/v1/oauth2/token",
    client_id="f0304373b74a44d2b584a3fb70ca9e56",
    client_secret="",
    scopes=("openid", "profile", "email", "model.completion"),
    token_body="form",
    lead=20 * 60.0,
    callback_port=0,
    callback_path="",
    device_url="https://chat.qwen.ai/api/v1/oauth2/device/code",
)

IFLOW = OAuthProvider(
    type="iflow",
    authorize_url="https://iflow.cn/oauth",
    token_url="https://iflow.cn/oauth/token",
    client_id="10009311001",
    client_secret="4Z3YjXycVsQvyGF1etiNlIBB4RsqSDtW",
    scopes=(),
    token_body="form",
    lead=24 * HOUR,
    callback_port=11451,
    callback_path="/oauth2callback",
    # The account's API key (what requests carry) comes with the user's details.
    userinfo_url="https://iflow.cn/api/oauth/getUserInfo",
    basic_auth=True,
    platform_url="https://platform.iflow.cn/api/openapi/apikey",
)

VERTEX = OAuthProvider(
    type="vertex",
    authorize_url="",
    # A service account file's own token_uri wins.
    token_url=GOOGLE_TOKEN,
    client_id="",
    client_secret="",
    scopes=("https://www.googleapis.com/auth/cloud-platform",),
    token_body="form",
    lead=5 * 60.0,
    callback_port=0,
    callback_path="",
    grant="jwt-bearer",
)

#: by credential-file C{type}; C{gemini} files are Gemini CLI accounts
PROVIDERS: dict[str, OAuthProvider] = {
    p.type: p for p in (CLAUDE, CODEX, GEMINI_CLI, ANTIGRAVITY, XAI, KIMI, QWEN, IFLOW, VERTEX)
}
PROVIDERS["gemini"] = GEMINI_CLI


def at_base(provider: OAuthProvider, base: str) -> OAuthProvider:
    """
    C{provider} with every endpoint on one origin: C{BASE/authorize},
    C{BASE/token} and (when it has them) C{BASE/userinfo}, C{BASE/device}
    and the discovery document C{BASE/.well-known/openid-configuration}. This is how tests
    and C{CLIPROXYD_OAUTH_BASE} point a login at L{SimulatedAuthServer}.

    @see: L{cliproxyd.testing.authserver.SimulatedAuthServer}
    """
    base = base.rstrip("/")
    return evolve(
        provider,
        authorize_url=f"{base}/authorize",
        # A provider found through discovery keeps doing so (the server's discovery names /token).
        token_url=f"{base}/token" if provider.token_url else "",
        userinfo_url=f"{base}/userinfo" if provider.userinfo_url else "",
        device_url=f"{base}/device" if provider.device_url or provider.discovery_url else "",
        discovery_url=f"{base}/.well-known/openid-configuration" if provider.discovery_url else "",
        platform_url=f"{base}/api/openapi/apikey" if provider.platform_url else "",
    )
