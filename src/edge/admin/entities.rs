//! Business entities for operators: create, list, show, configure, add and remove agents,
//! list threads, and assign / release / close a thread. Work that talks to the `Entity`
//! actor runs on the relay's arbiter, where actors live. Every route is audited by the
//! scope; every routing change also gets its own audit line (`announce_entity_changes`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{only_params, AdminError, State};
use crate::actors::entity::{
    self, AddAgent, Assign, Change, Close, Configure, EntityError, EntityView, Release,
    RemoveAgent, View, Who,
};
use crate::edge::session::announce_entity_changes;
use crate::edge::RelayCtx;
use crate::ids::AccountId;
use crate::store::{AssignPolicy, EntityRecord};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/entities", web::get().to(list))
        .route("/entities", web::post().to(create))
        .route("/entities/{entity}", web::get().to(show))
        .route("/entities/{entity}", web::patch().to(update))
        .route(
            "/entities/{entity}/agents/{agent}",
            web::put().to(add_agent),
        )
        .route(
            "/entities/{entity}/agents/{agent}",
            web::delete().to(remove_agent),
        )
        .route("/entities/{entity}/threads", web::get().to(threads))
        .route(
            "/entities/{entity}/threads/{customer}/{action}",
            web::post().to(thread_action),
        );
}

/// The body of `POST /v1/entities`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    handle: String,
    name: String,
    admin: String,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    copy_admin: bool,
    /// A duration such as "30s" or "5m".
    #[serde(default)]
    auto_assign_after: Option<String>,
}

/// The body of `PATCH /v1/entities/{entity}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    copy_admin: Option<bool>,
    #[serde(default)]
    auto_assign_after: Option<String>,
}

/// The body of `PUT /v1/entities/{entity}/agents/{agent}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Agent {
    name: String,
}

/// The body of `POST /v1/entities/{entity}/threads/{customer}/assign`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    agent: String,
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

fn account_param(ctx: &RelayCtx, name: &'static str, text: &str) -> Result<AccountId, AdminError> {
    if text.starts_with('@') {
        return AccountId::parse(text).map_err(|e| AdminError::bad(name, e.to_string()));
    }
    let text = match text.strip_prefix(' ') {
        Some(rest) => format!("+{rest}"),
        None => text.to_owned(),
    };
    crate::registration::normalise(&text, ctx.cfg.registration.default_country.as_ref())
        .map_err(|e| AdminError::bad(name, format!("not a phone number ({e}): {text:?}")))
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

fn json(v: &EntityView) -> serde_json::Value {
    let info = crate::edge::session::entity_info(v);
    serde_json::json!({
        "handle": info.entity,
        "name": info.display_name,
        "phone": info.phone,
        "admin": info.admin,
        "policy": info.policy,
        "copy_admin": info.copy_admin,
        "auto_assign_after_ms": v.record.auto_assign_after_ms,
        "agents": info.agents.iter().map(|a| serde_json::json!({
            "account": a.account, "name": a.display_name, "open_threads": a.open_threads,
        })).collect::<Vec<_>>(),
        "threads": info.threads.iter().map(|t| serde_json::json!({
            "customer": t.customer,
            "agent": if t.agent.is_empty() { None } else { Some(&t.agent) },
            "open": t.open,
            "updated_ms": t.updated_ms,
        })).collect::<Vec<_>>(),
    })
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
async fn list(
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
    Ok(HttpResponse::Ok().json(serde_json::json!({ "entities": rows })))
}

/// POST /v1/entities: creates an entity (`{"handle", "name", "admin", "phone"?, "policy"?,
/// "copy_admin"?, "auto_assign_after"?}`). The administrator must be registered; the handle
/// and the phone must not name an account or another entity.
async fn create(state: State, body: web::Json<Create>) -> Result<HttpResponse, AdminError> {
    let b = body.into_inner();
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
    entity::check_display_name(&b.name).map_err(|e| AdminError::bad("name", e.to_string()))?;
    let admin = account_param(ctx, "admin", &b.admin)?;
    if admin.handle().is_some() || !ctx.store.account_exists(&admin)? {
        return Err(AdminError::bad(
            "admin",
            format!("{admin} is not a registered account"),
        ));
    }
    let phone = match &b.phone {
        None => None,
        Some(p) => {
            let p = account_param(ctx, "phone", p)?;
            if p.handle().is_some() {
                return Err(AdminError::bad("phone", "must be a phone number"));
            }
            if ctx.store.account_exists(&p)? || ctx.store.entity_by_phone(&p)?.is_some() {
                return Err(AdminError::bad(
                    "phone",
                    format!("{p} is already a registered account or another entity's number"),
                ));
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
        return Err(AdminError::bad(
            "handle",
            format!("{handle} is already taken (an entity or a bridged device)"),
        ));
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
        return Err(AdminError::bad(
            "handle",
            format!("{handle} is already taken"),
        ));
    }
    ctx.durability.wait().await?;
    tracing::info!(entity = %handle, admin = %admin, "Business entity created.");
    let h = handle.clone();
    let v = on_relay(&state, move |ctx| async move { view(&ctx, &h, None).await }).await?;
    Ok(HttpResponse::Created().json(json(&v)))
}

/// GET /v1/entities/{entity}: the entity, its agents with their load, and its threads.
async fn show(state: State, path: web::Path<String>) -> Result<HttpResponse, AdminError> {
    let id = handle_param(&path.into_inner())?;
    let v = on_relay(
        &state,
        move |ctx| async move { view(&ctx, &id, None).await },
    )
    .await?;
    Ok(HttpResponse::Ok().json(json(&v)))
}

/// PATCH /v1/entities/{entity}: `{"name"?, "policy"?, "copy_admin"?, "auto_assign_after"?}`.
async fn update(
    state: State,
    path: web::Path<String>,
    body: web::Json<Update>,
) -> Result<HttpResponse, AdminError> {
    let id = handle_param(&path.into_inner())?;
    let b = body.into_inner();
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
async fn add_agent(
    state: State,
    path: web::Path<(String, String)>,
    body: web::Json<Agent>,
) -> Result<HttpResponse, AdminError> {
    let (e, a) = path.into_inner();
    let id = handle_param(&e)?;
    let agent = account_param(&state.ctx, "agent", &a)?;
    let name = body.into_inner().name;
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
async fn threads(
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
    if let (Some(a), Some(list)) = (&agent, j.get_mut("threads").and_then(|t| t.as_array_mut())) {
        list.retain(|t| t["agent"].as_str() == Some(a.as_str()));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "handle": j["handle"], "agents": j["agents"], "threads": j["threads"],
    })))
}

/// POST /v1/entities/{entity}/threads/{customer}/{assign|release|close}: an operator routes a
/// thread. An operator's assignment carries no history (only the administrator's client can
/// read it); the agent gets the assignment notice and the customer's next messages.
async fn thread_action(
    state: State,
    path: web::Path<(String, String, String)>,
    body: Option<web::Json<AssignBody>>,
) -> Result<HttpResponse, AdminError> {
    let (e, c, action) = path.into_inner();
    let id = handle_param(&e)?;
    let customer = account_param(&state.ctx, "customer", &c)?;
    let agent = match (action.as_str(), body) {
        ("assign", Some(b)) => Some(account_param(&state.ctx, "agent", &b.into_inner().agent)?),
        ("assign", None) => {
            return Err(AdminError::bad(
                "agent",
                "assign needs a body {\"agent\": …}",
            ))
        }
        ("release" | "close", _) => None,
        (other, _) => {
            return Err(AdminError::bad(
                "action",
                format!("must be assign, release or close, got {other:?}"),
            ))
        }
    };
    let v = on_relay(&state, move |ctx| async move {
        let (_, addr) = actor(&ctx, &id)?;
        let by = Who::Operator;
        let change = match (action.as_str(), agent) {
            ("assign", Some(agent)) => {
                addr.send(Assign {
                    by,
                    customer: customer.clone(),
                    agent,
                })
                .await
            }
            ("release", _) => {
                addr.send(Release {
                    by,
                    customer: customer.clone(),
                })
                .await
            }
            _ => {
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
