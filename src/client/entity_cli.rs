//! `relaybox client entity …`: the administrator's and agents' side of a business entity
//! (threads, assign, release, close, agents). Customers simply `send @entity …`; agents answer
//! with `send --as @entity CUSTOMER …` (or `entity reply`).

use clap::Subcommand;

use super::Client;
use crate::wire::messages::EntityInfo;

#[derive(Subcommand, Debug)]
pub enum EntityCmd {
    /// Show the entity, its agents with their load, and the threads you may see (all for the
    /// administrator, your own for an agent).
    Threads {
        entity: String,
        /// Only this customer's thread.
        #[arg(long)]
        customer: Option<String>,
    },
    /// Administrator: assign CUSTOMER's thread to AGENT, handing over its recent history end
    /// to end encrypted to the agent's devices. Again to reassign.
    Assign {
        entity: String,
        customer: String,
        agent: String,
    },
    /// Administrator: route CUSTOMER's thread back to you.
    Release { entity: String, customer: String },
    /// Administrator or the assigned agent: close CUSTOMER's thread (a new message reopens it).
    Close { entity: String, customer: String },
    /// Answer CUSTOMER as the entity (the customer sees the entity, attributed to you).
    Reply {
        entity: String,
        customer: String,
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Administrator: add or remove agents.
    #[command(subcommand)]
    Agents(AgentsCmd),
}

#[derive(Subcommand, Debug)]
pub enum AgentsCmd {
    /// Add AGENT (a registered account) with the NAME customers see, or rename it.
    Add {
        entity: String,
        agent: String,
        #[arg(required = true, num_args = 1..)]
        name: Vec<String>,
    },
    /// Remove AGENT: its threads return to you at once.
    Remove { entity: String, agent: String },
}

pub async fn run(client: &mut Client, cmd: EntityCmd) -> anyhow::Result<()> {
    let info = match cmd {
        EntityCmd::Threads { entity, customer } => {
            client.entity_info(&entity, customer.as_deref()).await?
        }
        EntityCmd::Assign {
            entity,
            customer,
            agent,
        } => {
            let i = client.assign_thread(&entity, &customer, &agent).await?;
            println!("Assigned {customer}'s thread to {agent}; history handed over end to end.");
            i
        }
        EntityCmd::Release { entity, customer } => {
            let i = client.release_thread(&entity, &customer).await?;
            println!("{customer}'s thread is routed to the administrator again.");
            i
        }
        EntityCmd::Close { entity, customer } => {
            let i = client.close_thread(&entity, &customer).await?;
            println!("Closed {customer}'s thread.");
            i
        }
        EntityCmd::Reply {
            entity,
            customer,
            text,
        } => {
            let (msg_id, ack) = client
                .reply_as_entity(&entity, &customer, &text.join(" "))
                .await?;
            println!("sent {msg_id} as {entity} at {} ✓", ack.timestamp_ms);
            return Ok(());
        }
        EntityCmd::Agents(AgentsCmd::Add {
            entity,
            agent,
            name,
        }) => client.add_agent(&entity, &agent, &name.join(" ")).await?,
        EntityCmd::Agents(AgentsCmd::Remove { entity, agent }) => {
            client.remove_agent(&entity, &agent).await?
        }
    };
    print_info(&info);
    Ok(())
}

fn print_info(i: &EntityInfo) {
    let phone = if i.phone.is_empty() {
        String::new()
    } else {
        format!(" ({})", i.phone)
    };
    println!("{} \"{}\"{phone}", i.entity, i.display_name);
    println!(
        "administrator: {}   policy: {}   copy to administrator: {}",
        i.admin,
        i.policy,
        if i.copy_admin { "yes" } else { "no" }
    );
    println!("agents:");
    for a in &i.agents {
        println!(
            "  {} \"{}\"  open threads: {}",
            a.account, a.display_name, a.open_threads
        );
    }
    println!("threads:");
    for t in &i.threads {
        let who = if t.agent.is_empty() {
            "administrator"
        } else {
            t.agent.as_str()
        };
        let state = if t.open { "open" } else { "closed" };
        println!("  {}  {state}  → {who}", t.customer);
    }
}
