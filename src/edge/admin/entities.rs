//! Business entities for operators: create, list, show, configure, add and remove agents,
//! list threads, and assign / release / close a thread. Work that talks to the `Entity`
//! actor runs on the relay's arbiter, where actors live. Every route is audited by the
//! scope; every routing change also gets its own audit line (`announce_entity_changes`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use actix_web::{delete, get, patch, post, put, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::ErrorBody;
use super::{account_param, only_params, AdminError, Object, State};
use crate::actors::entity::{
    self, AddAgent, Assign, Change, Close, Configure, EntityError, EntityView, Release,
    RemoveAgent, View, Who,
};
use crate::edge::session::announce_entity_changes;
use crate::edge::RelayCtx;
use crate::ids::AccountId;
use crate::store::{AssignPolicy, EntityRecord};

pub(super) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_entities)
        .service(create_entity)
        .service(show_entity)
        .service(update_entity)
        .service(add_agent)
        .service(remove_agent)
        .service(list_threads)
        .service(assign_thread)
        .service(release_thread)
        .service(close_thread);
}

/// The body of `POST /v1/entities`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Create {
    /// `@` and a name such as `@acme-branch-12`.
    #[schema(pattern = "^@[a-z0-9][a-z0-9.-]{0,31}$")]
    handle: String,
    /// The entity's display name (1 to 64 characters, no control or bidirectional characters).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069\\ufeff]*$"
    )]
    name: String,
    /// The administrator: a registered account's phone number.
    #[schema(pattern = "^\\+[1-9][0-9]{7,14}$")]
    admin: String,
    /// A phone number customers may message the entity at.
    #[serde(default)]
    #[schema(pattern = "^\\+[1-9][0-9]{7,14}$")]
    phone: Option<String>,
    /// `manual` (the default), `round-robin` or `least-loaded`.
    #[serde(default)]
    #[schema(pattern = "^(manual|round-robin|least-loaded)$")]
    policy: Option<String>,
    /// Customer messages of assigned threads also go to the administrator.
    #[serde(default)]
    copy_admin: bool,
    /// A duration such as "30s" or "5m".
    #[serde(default)]
    #[schema(pattern = "^[0-9]{1,6}(ms|s|m|h|d)$")]
    auto_assign_after: Option<String>,
}

/// The body of `PATCH /v1/entities/{entity}`: the fields to change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Update {
    /// The entity's display name (1 to 64 characters, no control or bidirectional characters).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069\\ufeff]*$"
    )]
    name: Option<String>,
    /// `manual`, `round-robin` or `least-loaded`.
    #[serde(default)]
    #[schema(pattern = "^(manual|round-robin|least-loaded)$")]
    policy: Option<String>,
    #[serde(default)]
    copy_admin: Option<bool>,
    /// A duration such as "30s" or "5m".
    #[serde(default)]
    #[schema(pattern = "^[0-9]{1,6}(ms|s|m|h|d)$")]
    auto_assign_after: Option<String>,
}

/// The body of `PUT /v1/entities/{entity}/agents/{agent}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Agent {
    /// The agent's display name (1 to 64 characters, no control or bidirectional characters).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069\\ufeff]*$"
    )]
    name: String,
}

/// The body of `POST /v1/entities/{entity}/threads/{customer}/assign`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    /// The agent's phone number.
    #[schema(pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$")]
    agent: String,
}

/// A business entity.
#[derive(Serialize, ToSchema)]
struct EntityJson {
    handle: String,
    name: String,
    /// Empty when the entity has no phone number.
    phone: String,
    admin: String,
    /// `manual`, `round-robin` or `least-loaded`.
    policy: String,
    copy_admin: bool,
    auto_assign_after_ms: Option<u64>,
    agents: Vec<AgentJson>,
    threads: Vec<ThreadJson>,
}

/// An agent of an entity and its load.
#[derive(Serialize, ToSchema)]
struct AgentJson {
    account: String,
    name: String,
    open_threads: u32,
}

/// A customer's thread with an entity.
#[derive(Serialize, ToSchema)]
struct ThreadJson {
    customer: String,
    /// The assigned agent; absent (null) while the administrator holds the thread.
    agent: Option<String>,
    open: bool,
    updated_ms: u64,
}

/// Every business entity.
#[derive(Serialize, ToSchema)]
struct EntityList {
    entities: Vec<EntityJson>,
}

/// An entity's threads.
#[derive(Serialize, ToSchema)]
struct ThreadList {
    handle: String,
    agents: Vec<AgentJson>,
    threads: Vec<ThreadJson>,
}

fn refusal(e: EntityError) -> AdminError {
    match e {
        EntityError::UnknownEntity(_)
        | EntityError::UnknownThread(_)
        | EntityError::NotAgent(_) => AdminError::NotFound(e.to_string()),
        EntityError::Invalid(m) => AdminError::bad("body", m),
        EntityError::Store(s) => s.into(),
        // An operator has the administrator's rights; these cannot happen here.
        EntityError::NotAdmin(_) | EntityError::NotAssigned(_) | EntityError::NotStaff(_) => {
            AdminError::Internal(e.to_string())
        }
    }
}

fn unavailable<E>(_: E) -> AdminError {
    AdminError::Unavailable("the relay is shutting down".into())
}

/// Runs `f` on the relay's arbiter and waits for its answer.
async fn on_relay<T, F, Fut>(state: &State, f: F) -> Result<T, AdminError>
where
    T: Send + 'static,
    F: FnOnce(Arc<RelayCtx>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, AdminError>> + 'static,
{
    let ctx = state.ctx.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = state.relay.spawn_fn(move || {
        actix_rt::spawn(async move {
            let _ = tx.send(f(ctx).await);
        });
    });
    if !sent {
        return Err(unavailable(()));
    }
    rx.await.map_err(unavailable)?
}

fn handle_param(text: &str) -> Result<AccountId, AdminError> {
    match AccountId::parse(text) {
        Ok(a) if a.handle().is_some() => Ok(a),
        _ => Err(AdminError::bad(
            "entity",
            format!("must be a handle such as @acme-branch-12, got {text:?}"),
        )),
    }
}

fn policy_param(p: &str) -> Result<AssignPolicy, AdminError> {
    AssignPolicy::parse(p).ok_or_else(|| {
        AdminError::bad(
            "policy",
            format!("must be manual, round-robin or least-loaded, got {p:?}"),
        )
    })
}

fn duration_param(d: &str) -> Result<u64, AdminError> {
    humantime::parse_duration(d)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .map_err(|e| {
            AdminError::bad(
                "auto_assign_after",
                format!("must be a duration such as 30s or 5m ({e}), got {d:?}"),
            )
        })
}

fn json(v: &EntityView) -> EntityJson {
    let info = crate::edge::session::entity_info(v);
    EntityJson {
        agents: info
            .agents
            .into_iter()
            .map(|a| AgentJson {
                account: a.account,
                name: a.display_name,
                open_threads: a.open_threads,
            })
            .collect(),
        threads: info
            .threads
            .into_iter()
            .map(|t| ThreadJson {
                customer: t.customer,
                agent: (!t.agent.is_empty()).then_some(t.agent),
                open: t.open,
                updated_ms: t.updated_ms,
            })
            .collect(),
        handle: info.entity,
        name: info.display_name,
        phone: info.phone,
        admin: info.admin,
        policy: info.policy,
        copy_admin: info.copy_admin,
        auto_assign_after_ms: v.record.auto_assign_after_ms,
    }
}

/// The entity's actor, or 404.
fn actor(
    ctx: &RelayCtx,
    id: &AccountId,
) -> Result<(AccountId, actix::Addr<entity::Entity>), AdminError> {
    ctx.directory
        .entity(id)?
        .ok_or_else(|| AdminError::NotFound(format!("no business entity {id}")))
}

async fn view(
    ctx: &RelayCtx,
    id: &AccountId,
    customer: Option<AccountId>,
) -> Result<EntityView, AdminError> {
    let (_, addr) = actor(ctx, id)?;
    addr.send(View {
        asker: Who::Operator,
        customer,
    })
    .await
    .map_err(unavailable)?
    .map_err(refusal)
}

async fn announce(ctx: &RelayCtx, id: &AccountId, changes: &[Change]) -> Result<(), AdminError> {
    let rec = ctx
        .store
        .entity_get(id)?
        .ok_or_else(|| AdminError::NotFound(format!("no business entity {id}")))?;
    announce_entity_changes(ctx, id, &rec.admin, changes)
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))
}

/// GET /v1/entities: every entity with its agents and their load.
#[utoipa::path(
    tag = "entities",
    responses(
        (status = 200, description = "Every entity (without threads)", body = EntityList),
        (status = 400, description = "A query parameter (none is accepted)", body = ErrorBody),
        (status = 503, description = "The relay is shutting down", body = ErrorBody),
    ),
)]
#[get("/entities")]
async fn list_entities(
    state: State,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, AdminError> {
    only_params(&q, &[])?;
    let handles: Vec<AccountId> = state
        .ctx
        .store
        .entity_list()?
        .into_iter()
        .filter_map(|r| AccountId::parse(&r.handle).ok())
        .collect();
    let rows = on_relay(&state, move |ctx| async move {
        let mut rows = Vec::new();
        for h in handles {
            let mut v = view(&ctx, &h, None).await?;
            v.threads.clear();
            rows.push(json(&v));
        }
        Ok(rows)
    })
    .await?;
    Ok(HttpResponse::Ok().json(EntityList { entities: rows }))
}

/// POST /v1/entities: creates an entity (`{"handle", "name", "admin", "phone"?, "policy"?,
/// "copy_admin"?, "auto_assign_after"?}`). The administrator must be registered; the handle
/// and the phone must not name an account or another entity.
#[utoipa::path(
    tag = "entities",
    request_body = Create,
    responses(
        (status = 201, description = "The entity was created", body = EntityJson,
            headers(("Location" = String, description = "The new entity's route, /v1/entities/{handle}"))),
        (status = 400, description = "A malformed parameter or body", body = ErrorBody),
        (status = 404, description = "No such entity, agent or thread", body = ErrorBody),
        (status = 503, description = "The relay is shutting down", body = ErrorBody),
        (status = 409, description = "The handle or phone is taken", body = ErrorBody),
    ),
)]
#[post("/entities")]
async fn create_entity(state: State, body: Object<Create>) -> Result<HttpResponse, AdminError> {
    let b = body.0;
    let ctx = &state.ctx;
    let handle = match AccountId::parse(&b.handle) {
        Ok(a) if a.handle().is_some() => a,
        _ => {
            return Err(AdminError::bad(
                "handle",
                format!(
                    "must be @ and a name such as @acme-branch-12, got {:?}",
                    b.handle
                ),
            ))
        }
    };
    let admin = account_param(ctx, "admin", &b.admin)?;
    if admin.handle().is_some() {
        return Err(AdminError::bad(
            "admin",
            format!("must be a person's phone number, got {admin}"),
        ));
    }
    if !ctx.store.account_exists(&admin)? {
        return Err(AdminError::NotFound(format!(
            "{admin} is not a registered account (an administrator must be one)"
        )));
    }
    entity::check_display_name(&b.name).map_err(|e| AdminError::bad("name", e.to_string()))?;
    let phone = match &b.phone {
        None => None,
        Some(p) => {
            let p = account_param(ctx, "phone", p)?;
            if p.handle().is_some() {
                return Err(AdminError::bad("phone", "must be a phone number"));
            }
            if ctx.store.account_exists(&p)? || ctx.store.entity_by_phone(&p)?.is_some() {
                return Err(AdminError::Conflict(format!(
                    "phone {p} is already a registered account or another entity's number"
                )));
            }
            Some(p)
        }
    };
    let policy = b.policy.as_deref().map(policy_param).transpose()?;
    let auto = b
        .auto_assign_after
        .as_deref()
        .map(duration_param)
        .transpose()?;
    if ctx.store.account_exists(&handle)? || ctx.store.entity_get(&handle)?.is_some() {
        return Err(AdminError::Conflict(format!(
            "{handle} is already taken (an entity or a bridged device)"
        )));
    }
    let rec = EntityRecord {
        handle: handle.to_string(),
        phone: phone.map(|p| p.to_string()).unwrap_or_default(),
        display_name: b.name,
        admin: admin.to_string(),
        agents: Default::default(),
        policy: policy.unwrap_or(AssignPolicy::Manual),
        copy_admin: b.copy_admin,
        auto_assign_after_ms: auto,
        next_round_robin: 0,
        created_ms: crate::clock::now_ms(),
    };
    if !ctx.store.entity_create(&rec)? {
        return Err(AdminError::Conflict(format!("{handle} is already taken")));
    }
    ctx.durability.wait().await?;
    tracing::info!(entity = %handle, admin = %admin, "Business entity created.");
    let h = handle.clone();
    let v = on_relay(&state, move |ctx| async move { view(&ctx, &h, None).await }).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/v1/entities/{handle}"),
        ))
        .json(json(&v)))
}

/// GET /v1/entities/{entity}: the entity, its agents with their load, and its threads.
#[utoipa::path(
    tag = "entities",
    params(("entity" = String, Path, description = "The entity's handle, e.g. @acme-branch-12", example = "@acme", pattern = "^@[a-z0-9][a-z0-9.-]{0,31}$")),
    responses(
        (status = 200, description = "The entity", body = EntityJson),
        (status = 400, description = "A malformed parameter or body", body = ErrorBody),
        (status = 404, description = "No such entity, agent or thread", body = ErrorBody),
        (status = 503, description = "The relay is shutting down", body = ErrorBody),
    ),
)]
#[get("/entities/{entity}")]
async fn show_entity(state: State, path: web::Path<String>) -> Result<HttpResponse, AdminError> {
    let id = handle_param(&path.into_inner())?;
    let v = on_relay(
        &state,
        move |ctx| async move { view(&ctx, &id, None).await },
    )
    .await?;
    Ok(HttpResponse::Ok().json(json(&v)))
}

/// PATCH /v1/entities/{entity}: `{"name"?, "policy"?, "copy_admin"?, "auto_assign_after"?}`.
#[utoipa::path(
    tag = "entities",
    params(("entity" = String, Path, description = "The entity's handle, e.g. @acme-branch-12", example = "@acme", pattern = "^@[a-z0-9][a-z0-9.-]{0,31}$")),
    request_body = Update,
    responses(
        (status = 200, description = "The entity after the change", body = EntityJson),
        (status = 400, description = "A malformed parameter or body", body = ErrorBody),
        (status = 404, description = "No such entity, agent or thread", body = ErrorBody),
        (status = 503, description = "The relay is shutting down", body = ErrorBody),
    ),
)]
#[patch("/entities/{entity}")]
async fn update_entity(
    state: State,
    path: web::Path<String>,
    body: Object<Update>,
) -> Result<HttpResponse, AdminError> {
    let id = handle_param(&path.into_inner())?;
    let b = body.0;
    let policy = b.policy.as_deref().map(policy_param).transpose()?;
    let auto = b
        .auto_assign_after
        .as_deref()
        .map(duration_param)
        .transpose()?;
    let v = on_relay(&state, move |ctx| async move {
        let (_, addr) = actor(&ctx, &id)?;
        addr.send(Configure {
            by: Who::Operator,
            policy,
            copy_admin: b.copy_admin,
            display_name: b.name,
            auto_assign_after_ms: auto,
        })
        .await
        .map_err(unavailable)?
        .map_err(refusal)?;
        ctx.durability.wait().await?;
        view(&ctx, &id, None).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(json(&v)))
}

/// PUT /v1/entities/{entity}/agents/{agent}: adds (or renames) an agent, `{"name"}`.
#[utoipa::path(
    tag = "entities",
    params(("entity" = String, Path, description = "The entity's handle, e.g. @acme-branch-12", example = "@acme", pattern = "^@[a-z0-9][a-z0-9.-]{0,31}$"), ("agent" = String, Path, description = "The agent's phone number (a registered account)", example = "+14155550102", pattern = "^\\+[1-9][0-9]{7,14}$")),
    request_body = Agent,
    responses(
        (status = 200, description = "The entity with the agent", body = EntityJson),
        (status = 400, description = "A malformed parameter or body", body = ErrorBody),
        (status = 404, description = "No such entity, agent or thread", body = ErrorBody),
        (status = 503, description = "The relay is shutting down", body = ErrorBody),
    ),
)]
#[put("/entities/{entity}/agents/{agent}")]
async fn add_agent(
    state: State,
    path: web::Path<(String, String)>,
    body: Object<Agent>,
) -> Result<HttpResponse, AdminError> {
    let (e, a) = path.into_inner();
    let id = handle_param(&e)?;
    let agent = account_param(&state.ctx, "agent", &a)?;
    if agent.handle().is_some() {
        return Err(AdminError::bad(
            "agent",
            format!("must be a person's phone number, got {agent}"),
        ));
    }
    if !state.ctx.store.account_exists(&agent)? {
        return Err(AdminError::NotFound(format!(
            "{agent} is not a registered account (an agent must be one)"
        )));
    }
    let name = body.0.name;
    let v = on_relay(&state, move |ctx| async move {
        let (_, addr) = actor(&ctx, &id)?;
        addr.send(AddAgent {
            by: Who::Operator,
            agent,
            display_name: name,
            max_agents: crate::config::to_usize(ctx.cfg.entities.max_agents),
        })
        .await
        .map_err(unavailable)?
        .map_err(refusal)?;
        ctx.durability.wait().await?;
        view(&ctx, &id, None).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(json(&v)))
}

/// DELETE /v1/entities/{entity}/agents/{agent}: removes an agent; its threads return to the
/// administrator at once and their customers re-key.
#[utoipa::path(
    tag = "entities",
    params(("entity" = String, Path, description = "The entity's handle, e.g. @acme-branch-12", example = "@acme", pattern = "^@[a-z0-9][a-z0-9.-]{0,31}$"), ("agent" = String, Path, description = "The agent's phone number", example = "+14155550102", pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$")),
    responses(
        (status = 200, description = "The entity without the agent", body = EntityJson),
        (status = 400, description = "A malformed parameter or body", body = ErrorBody),
        (status = 404, description = "No such entity, agent or thread", body = ErrorBody),
        (status = 503, description = "The relay is shutting down", body = ErrorBody),
    ),
)]
#[delete("/entities/{entity}/agents/{agent}")]
async fn remove_agent(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    let (e, a) = path.into_inner();
    let id = handle_param(&e)?;
    let agent = account_param(&state.ctx, "agent", &a)?;
    let v = on_relay(&state, move |ctx| async move {
        let (_, addr) = actor(&ctx, &id)?;
        let (_, changes) = addr
            .send(RemoveAgent {
                by: Who::Operator,
                agent,
            })
            .await
            .map_err(unavailable)?
            .map_err(refusal)?;
        announce(&ctx, &id, &changes).await?;
        view(&ctx, &id, None).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(json(&v)))
}

/// GET /v1/entities/{entity}/threads?agent=…: the entity's threads, optionally one agent's.
#[utoipa::path(
    tag = "entities",
    params(("entity" = String, Path, description = "The entity's handle, e.g. @acme-branch-12", example = "@acme", pattern = "^@[a-z0-9][a-z0-9.-]{0,31}$"), ("agent" = Option<String>, Query, description = "Only this agent's threads", example = "+14155550102", pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$")),
    responses(
        (status = 200, description = "The entity's threads", body = ThreadList),
        (status = 400, description = "A malformed parameter or body", body = ErrorBody),
        (status = 404, description = "No such entity, agent or thread", body = ErrorBody),
        (status = 503, description = "The relay is shutting down", body = ErrorBody),
    ),
)]
#[get("/entities/{entity}/threads")]
async fn list_threads(
    state: State,
    path: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, AdminError> {
    only_params(&q, &["agent"])?;
    let id = handle_param(&path.into_inner())?;
    let agent = q
        .get("agent")
        .map(|a| account_param(&state.ctx, "agent", a))
        .transpose()?;
    let v = on_relay(
        &state,
        move |ctx| async move { view(&ctx, &id, None).await },
    )
    .await?;
    if let Some(a) = &agent {
        if !v.record.agents.contains_key(a.as_str()) {
            return Err(AdminError::NotFound(format!(
                "{a} is not an agent of this entity"
            )));
        }
    }
    let mut j = json(&v);
    if let Some(a) = &agent {
        j.threads.retain(|t| t.agent.as_deref() == Some(a.as_str()));
    }
    Ok(HttpResponse::Ok().json(ThreadList {
        handle: j.handle,
        agents: j.agents,
        threads: j.threads,
    }))
}

/// What an operator does to a customer's thread.
enum ThreadAction {
    Assign(AccountId),
    Release,
    Close,
}

/// POST /v1/entities/{entity}/threads/{customer}/assign: an operator assigns a thread to an
/// agent, `{"agent"}`. An operator's assignment carries no history (only the administrator's
/// client can read it); the agent gets the assignment notice and the customer's next messages.
#[utoipa::path(
    tag = "entities",
    params(("entity" = String, Path, description = "The entity's handle, e.g. @acme-branch-12", example = "@acme", pattern = "^@[a-z0-9][a-z0-9.-]{0,31}$"), ("customer" = String, Path, description = "The customer's phone number", example = "+14155550103", pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$")),
    request_body = AssignBody,
    responses(
        (status = 200, description = "The entity with the thread", body = EntityJson),
        (status = 400, description = "A malformed parameter or body", body = ErrorBody),
        (status = 404, description = "No such entity, agent or thread", body = ErrorBody),
        (status = 503, description = "The relay is shutting down", body = ErrorBody),
    ),
)]
#[post("/entities/{entity}/threads/{customer}/assign")]
async fn assign_thread(
    state: State,
    path: web::Path<(String, String)>,
    body: Object<AssignBody>,
) -> Result<HttpResponse, AdminError> {
    let agent = account_param(&state.ctx, "agent", &body.0.agent)?;
    thread_action(state, path, ThreadAction::Assign(agent)).await
}

/// POST /v1/entities/{entity}/threads/{customer}/release: the thread returns to the
/// administrator.
#[utoipa::path(
    tag = "entities",
    params(("entity" = String, Path, description = "The entity's handle, e.g. @acme-branch-12", example = "@acme", pattern = "^@[a-z0-9][a-z0-9.-]{0,31}$"), ("customer" = String, Path, description = "The customer's phone number", example = "+14155550103", pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$")),
    responses(
        (status = 200, description = "The entity with the thread", body = EntityJson),
        (status = 400, description = "A malformed parameter or body", body = ErrorBody),
        (status = 404, description = "No such entity, agent or thread", body = ErrorBody),
        (status = 503, description = "The relay is shutting down", body = ErrorBody),
    ),
)]
#[post("/entities/{entity}/threads/{customer}/release")]
async fn release_thread(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    thread_action(state, path, ThreadAction::Release).await
}

/// POST /v1/entities/{entity}/threads/{customer}/close: the thread is closed.
#[utoipa::path(
    tag = "entities",
    params(("entity" = String, Path, description = "The entity's handle, e.g. @acme-branch-12", example = "@acme", pattern = "^@[a-z0-9][a-z0-9.-]{0,31}$"), ("customer" = String, Path, description = "The customer's phone number", example = "+14155550103", pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$")),
    responses(
        (status = 200, description = "The entity with the thread", body = EntityJson),
        (status = 400, description = "A malformed parameter or body", body = ErrorBody),
        (status = 404, description = "No such entity, agent or thread", body = ErrorBody),
        (status = 503, description = "The relay is shutting down", body = ErrorBody),
    ),
)]
#[post("/entities/{entity}/threads/{customer}/close")]
async fn close_thread(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    thread_action(state, path, ThreadAction::Close).await
}

/// Routes a thread for an operator and answers the entity with that thread.
async fn thread_action(
    state: State,
    path: web::Path<(String, String)>,
    action: ThreadAction,
) -> Result<HttpResponse, AdminError> {
    let (e, c) = path.into_inner();
    let id = handle_param(&e)?;
    let customer = account_param(&state.ctx, "customer", &c)?;
    let v = on_relay(&state, move |ctx| async move {
        let (_, addr) = actor(&ctx, &id)?;
        let by = Who::Operator;
        let change = match action {
            ThreadAction::Assign(agent) => {
                addr.send(Assign {
                    by,
                    customer: customer.clone(),
                    agent,
                })
                .await
            }
            ThreadAction::Release => {
                addr.send(Release {
                    by,
                    customer: customer.clone(),
                })
                .await
            }
            ThreadAction::Close => {
                addr.send(Close {
                    by,
                    customer: customer.clone(),
                })
                .await
            }
        }
        .map_err(unavailable)?
        .map_err(refusal)?;
        announce(&ctx, &id, &[change]).await?;
        view(&ctx, &id, Some(customer)).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(json(&v)))
}
