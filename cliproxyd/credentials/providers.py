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

#: by credential-file C{type}; C{gemini} files are Gemini CLI accounts
PROVIDERS: dict[str, OAuthProvider] = {
    p.type: p for p in (CLAUDE, CODEX, GEMINI_CLI, ANTIGRAVITY)
}
PROVIDERS["gemini"] = GEMINI_CLI


def at_base(provider: OAuthProvider, base: str) -> OAuthProvider:
    """
    C{provider} with every endpoint on one origin: C{BASE/authorize},
    C{BASE/token} and (when it has one) C{BASE/userinfo}. This is how tests
    and C{CLIPROXYD_OAUTH_BASE} point a login at L{SimulatedAuthServer}.

    @see: L{cliproxyd.testing.authserver.SimulatedAuthServer}
    """
    base = base.rstrip("/")
    return evolve(
        provider,
        authorize_url=f"{base}/authorize",
        token_url=f"{base}/token",
        userinfo_url=f"{base}/userinfo" if provider.userinfo_url else "",
    )
