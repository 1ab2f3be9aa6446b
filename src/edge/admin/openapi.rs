//! The operator API's OpenAPI 3 description: generated from the handlers' `#[utoipa::path]`
//! annotations and collected by utoipa-actix-web from the very `service(...)` calls that route
//! them ([`super::routes`]), so a route cannot be served without being described. It is built
//! once when the server is built and served at `GET /v1/openapi.json`.
//!
//! The description is served **without** the bearer token: it is the same for every relay of a
//! version (it is built from the source), it names no account, device or secret, and tools
//! (schemathesis, a client generator) fetch it before they are given a token. The listener is
//! loopback-only, like `/metrics`. Every other `/v1` route requires the token; the description
//! says so with one `bearer` security scheme, and every such operation lists 401 and 500.

use std::collections::BTreeMap;

use actix_web::{get, web, App, HttpResponse};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;

/// The name of the security scheme every token-protected operation requires.
pub const SECURITY_SCHEME: &str = "bearer";
/// Where the description is served (without a token).
pub const PATH: &str = "/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "relaybox operator API",
        description = "The admin listener of a relaybox relay (loopback only). Every `/v1` route \
            except `/v1/openapi.json` needs `Authorization: Bearer <token>`, the token being the \
            `admin.token` file in the data directory, and is recorded in the audit log. Errors \
            answer `{\"error\": {\"code\", \"message\", \"parameter\"?}}` with one status per code.",
    ),
    tags(
        (name = "health", description = "Liveness, readiness and metrics (no token)"),
        (name = "operations", description = "Stats, blobs, audit log, backups"),
        (name = "accounts", description = "Accounts and their devices"),
        (name = "mqtt", description = "The MQTT bridge and its provisioned devices"),
        (name = "entities", description = "Business entities, agents and threads"),
        (name = "abuse", description = "Abuse metrics, bans and the watch list"),
    ),
    components(schemas(super::error::ErrorBody)),
)]
struct ApiDoc;

/// The description, built once, and what the 405 answers need from it.
pub struct Spec {
    json: String,
    /// Route pattern (`/v1/accounts/{phone}`) → its methods, upper case.
    methods: BTreeMap<String, Vec<&'static str>>,
}

impl Spec {
    pub fn build() -> Self {
        let doc = document();
        let methods = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let ms = [
                    ("GET", item.get.is_some()),
                    ("PUT", item.put.is_some()),
                    ("POST", item.post.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("PATCH", item.patch.is_some()),
                ]
                .into_iter()
                .filter_map(|(m, has)| has.then_some(m))
                .collect();
                (path.clone(), ms)
            })
            .collect();
        // Serialising a tree of strings, maps and numbers cannot fail.
        let json = serde_json::to_string_pretty(&doc).unwrap_or_default();
        Self { json, methods }
    }

    /// The methods `pattern` (a route pattern as the router reports it) accepts, for `Allow`.
    pub fn allowed(&self, pattern: &str) -> Option<String> {
        self.methods.get(pattern).map(|ms| ms.join(", "))
    }
}

/// The operator API's description, from the same route table the server uses.
pub fn document() -> Document {
    let (_, mut doc) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(super::routes)
        .split_for_parts();
    secure(&mut doc);
    doc
}

/// Declares the bearer scheme and puts it, with its 401 and the store's 500, on every `/v1`
/// operation but the description itself: the token check is the scope's middleware, not
/// something each handler's annotation could be trusted to repeat.
fn secure(doc: &mut Document) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        SECURITY_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The contents of `admin.token` in the relay's data directory (64 hex digits).",
                ))
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") || path == PATH {
            continue;
        }
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            protect(op);
        }
    }
}

fn protect(op: &mut Operation) {
    op.security = Some(vec![SecurityRequirement::new(
        SECURITY_SCHEME,
        Vec::<String>::new(),
    )]);
    for (status, why) in [
        ("401", "No bearer token, or not the relay's"),
        (
            "500",
            "The store or the disk failed (details in the relay's log)",
        ),
    ] {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(error_response(why)));
    }
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// GET /v1/openapi.json: this API's OpenAPI 3.1 description (no token needed).
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "The OpenAPI description of this API", content_type = "application/json", body = Object)),
)]
#[get("/v1/openapi.json")]
pub(super) async fn serve(spec: web::Data<Spec>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(spec.json.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_route_declares_the_bearer_scheme_and_its_401() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"][SECURITY_SCHEME]["scheme"],
            "bearer"
        );
        let paths = doc["paths"].as_object().unwrap();
        let mut operations = 0;
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                operations += 1;
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                let secured = op.get("security").is_some();
                let open = !path.starts_with("/v1/") || path == PATH;
                assert_eq!(secured, !open, "{method} {path}");
                if secured {
                    assert!(op["responses"]["401"].is_object(), "{method} {path}");
                }
                assert!(
                    op["responses"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .any(|s| s.starts_with('2')),
                    "{method} {path} has no success answer"
                );
            }
        }
        // 3 open routes, the description, and 27 token routes.
        assert_eq!(
            operations,
            31,
            "{}",
            serde_json::to_string_pretty(&doc["paths"]).unwrap()
        );
    }
}
