//! Server-level routes: heartbeat, version, pre-flight checks, health, reset, identity,
//! the v1 deprecation notice, the OpenAPI document and its interactive page.

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use super::auth::Caller;
use super::errors::ApiError;
use super::types::{
    ChecklistResponse, GetUserIdentityResponse, HealthcheckResponse, HeartbeatResponse,
};
use super::{ApiResult, AppState};
use crate::auth::grants::{Action, Part};
use crate::auth::Principal;
use crate::catalog::{DEFAULT_DATABASE, DEFAULT_TENANT};
use crate::error::ErrorCode;

/// The version `GET /version` reports (Chroma's Rust server reports `1.0.0`).
pub const API_VERSION: &str = "1.0.0";

#[utoipa::path(get, path = "/api/v2/heartbeat", tag = "system",
    responses((status = 200, body = HeartbeatResponse)))]
pub async fn heartbeat() -> Json<HeartbeatResponse> {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Json(HeartbeatResponse {
        nanosecond_heartbeat: ns,
    })
}

#[utoipa::path(get, path = "/api/v2/version", tag = "system",
    responses((status = 200, body = String, content_type = "application/json")))]
pub async fn version() -> Json<&'static str> {
    Json(API_VERSION)
}

#[utoipa::path(get, path = "/api/v2/pre-flight-checks", tag = "system",
    responses((status = 200, body = ChecklistResponse)))]
pub async fn pre_flight_checks(State(state): State<AppState>) -> Json<ChecklistResponse> {
    Json(ChecklistResponse {
        max_batch_size: state.config.advertised_batch_size,
        supports_base64_encoding: true,
    })
}

/// Ready when the catalog, the object store and the key provider answer (checked at most
/// every few seconds); 503 with the same body otherwise.
#[utoipa::path(get, path = "/api/v2/healthcheck", tag = "system",
    responses((status = 200, body = HealthcheckResponse),
              (status = 503, body = HealthcheckResponse)))]
pub async fn healthcheck(State(state): State<AppState>) -> (StatusCode, Json<HealthcheckResponse>) {
    let health = state.engine.health().await;
    let ready = health.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Reads and writes need the same backends.
    (
        status,
        Json(HealthcheckResponse {
            is_executor_ready: ready,
            is_log_client_ready: ready,
        }),
    )
}

/// Deletes every tenant, database and collection; only when the server allows it.
#[utoipa::path(post, path = "/api/v2/reset", tag = "system",
    responses((status = 200, body = bool, content_type = "application/json"), (status = 403, body = super::ErrorResponse)))]
pub async fn reset(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<bool>> {
    if !caller
        .principal
        .allows_everything_under(Action::Admin, None, None)
    {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "resetting needs the admin action on every tenant (*/*/*:admin)",
        ));
    }
    crate::access::require_all_rows(&caller.principal, Action::Admin, "*", None, None)?;
    if !state.config.allow_reset {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "resetting is disabled: start the server with --allow-reset (CHROMA_ALLOW_RESET=true)",
        ));
    }
    state.engine.reset().await?;
    caller.audit("reset", Action::Admin, "*", "*");
    tracing::warn!("database reset: every tenant, database and collection was deleted");
    Ok(Json(true))
}

/// The caller, its tenant and the databases it can reach there. Without authentication,
/// the anonymous user of the default tenant.
#[utoipa::path(get, path = "/api/v2/auth/identity", tag = "system",
    responses((status = 200, body = GetUserIdentityResponse)))]
pub async fn identity(caller: Caller) -> Json<GetUserIdentityResponse> {
    let p = &caller.principal;
    if p.id == Principal::local().id {
        return Json(GetUserIdentityResponse {
            user_id: String::new(),
            tenant: DEFAULT_TENANT.to_string(),
            databases: vec![DEFAULT_DATABASE.to_string()],
        });
    }
    // The first named tenant of the caller's grants (the default tenant if it may reach
    // any), and the databases its grants name there ("*" for all).
    let tenant = p
        .grants
        .iter()
        .find_map(|g| match &g.tenant {
            Part::Name(t) => Some(t.clone()),
            Part::Any => None,
        })
        .unwrap_or_else(|| DEFAULT_TENANT.to_string());
    let mut databases: Vec<String> = p
        .grants
        .iter()
        .filter(|g| g.allows(Action::Read, &tenant, None, None))
        .map(|g| g.database.to_string())
        .collect();
    databases.sort();
    databases.dedup();
    Json(GetUserIdentityResponse {
        user_id: p.id.clone(),
        tenant,
        databases,
    })
}

/// Any `/api/v1/*`: 410 with Chroma's exact body.
pub async fn v1_deprecated() -> Response {
    ApiError {
        status: StatusCode::GONE,
        name: "Unimplemented",
        message: "The v1 API is deprecated. Please use /v2 apis".into(),
    }
    .into_response()
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

/// Every metric in Prometheus text format (see [`crate::metrics`]) for a caller allowed
/// to administer the whole deployment (the figures name every collection); 404 when the
/// process records no metrics (the Lambda functions write theirs to CloudWatch instead).
pub async fn metrics(caller: Caller) -> ApiResult<Response> {
    if !caller
        .principal
        .allows_everything_under(Action::Admin, None, None)
    {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "reading metrics needs the admin action on every tenant",
        ));
    }
    let Some(text) = crate::metrics::render_prometheus() else {
        return Err(ApiError::not_found("this server records no metrics"));
    };
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub async fn openapi_json() -> Json<&'static serde_json::Value> {
    Json(super::openapi::document())
}

/// A small self-contained explorer of `/openapi.json` (no assets from the network).
pub async fn docs() -> Html<&'static str> {
    Html(DOCS_HTML)
}

const DOCS_HTML: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>chroma API</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 70rem; color: #222; }
h1 { font-size: 1.4rem; }
details { border: 1px solid #ccc; border-radius: 4px; margin: .4rem 0; padding: .3rem .6rem; }
summary { cursor: pointer; font-family: monospace; }
.m { display: inline-block; width: 4.5rem; font-weight: bold; }
.get { color: #1a7f37; } .post { color: #0550ae; } .put { color: #9a6700; } .delete { color: #cf222e; } .patch { color: #8250df; }
textarea, input { font-family: monospace; width: 100%; box-sizing: border-box; }
pre { background: #f6f8fa; padding: .5rem; overflow: auto; max-height: 30rem; }
label { display: block; margin-top: .4rem; font-size: .9rem; }
</style>
</head>
<body>
<h1 id="title">chroma API</h1>
<p>Generated from <a href="/openapi.json">/openapi.json</a>. Open an operation to send a request.</p>
<div id="ops">loading…</div>
<script>
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;"}[c]));
function resolve(spec, s) {
  while (s && s.$ref) { s = spec.components.schemas[s.$ref.split("/").pop()]; }
  return s || {};
}
function example(spec, s, depth) {
  s = resolve(spec, s);
  if (depth > 4) return null;
  if (s.example !== undefined) return s.example;
  if (s.oneOf) return example(spec, s.oneOf.find(x => x.type !== "null") || s.oneOf[0], depth + 1);
  const t = Array.isArray(s.type) ? s.type.find(x => x !== "null") : s.type;
  if (t === "object" || s.properties) {
    const o = {};
    for (const k of (s.required || [])) o[k] = example(spec, s.properties[k], depth + 1);
    return o;
  }
  if (t === "array") return [];
  if (t === "string") return s.enum ? s.enum[0] : "string";
  if (t === "integer" || t === "number") return 0;
  if (t === "boolean") return false;
  return null;
}
async function send(form, method, path) {
  let url = path.replace(/\{([^}]+)\}/g, (_, n) => encodeURIComponent(form.elements["p_" + n].value));
  const q = form.elements.query.value.trim();
  if (q) url += "?" + q;
  const init = { method: method.toUpperCase(), headers: {} };
  const body = form.elements.body ? form.elements.body.value.trim() : "";
  if (body) { init.body = body; init.headers["Content-Type"] = "application/json"; }
  const out = form.querySelector("pre");
  out.textContent = "…";
  try {
    const r = await fetch(url, init);
    const text = await r.text();
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) {}
    out.textContent = r.status + " " + r.statusText + "\n\n" + shown;
  } catch (e) { out.textContent = String(e); }
}
fetch("/openapi.json").then(r => r.json()).then(spec => {
  document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
  const ops = document.getElementById("ops");
  ops.innerHTML = "";
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const d = document.createElement("details");
      const params = (op.parameters || []);
      let html = `<summary><span class="m ${method}">${method.toUpperCase()}</span>${esc(path)} ${op.summary ? "— " + esc(op.summary) : ""}</summary>`;
      if (op.description) html += `<p>${esc(op.description)}</p>`;
      html += `<form>`;
      for (const p of params.filter(p => p.in === "path")) {
        html += `<label>${esc(p.name)} (path)<input name="p_${esc(p.name)}" value="${p.name === "tenant" ? "default_tenant" : p.name === "database" ? "default_database" : ""}"></label>`;
      }
      const qn = params.filter(p => p.in === "query").map(p => p.name + "=").join("&");
      html += `<label>query string<input name="query" placeholder="${esc(qn)}"></label>`;
      const rb = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
      if (rb) html += `<label>body (JSON)<textarea name="body" rows="8">${esc(JSON.stringify(example(spec, rb.schema, 0), null, 2))}</textarea></label>`;
      const codes = Object.keys(op.responses || {}).join(", ");
      html += `<p>responses: ${esc(codes)}</p><button type="submit">Send</button><pre></pre></form>`;
      d.innerHTML = html;
      d.querySelector("form").addEventListener("submit", ev => { ev.preventDefault(); send(ev.target, method, path); });
      ops.appendChild(d);
    }
  }
}).catch(e => { document.getElementById("ops").textContent = "cannot load /openapi.json: " + e; });
</script>
</body>
</html>
"##;
