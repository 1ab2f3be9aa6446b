// relaybox browser companion: the page's shell. The protocol, Noise and Olm all run in the
// shared Rust client core compiled to WebAssembly (relaybox_web.js); this file only moves
// WebSocket messages in and out, keeps the device in IndexedDB (encrypted under a
// non-extractable WebCrypto AES-GCM key) and draws the chats. No cryptography of its own.
import init, { Companion, qr_svg, version } from './relaybox_web.js';

const $ = (id) => document.getElementById(id);
const DB_NAME = 'relaybox';
const STORE = 'kv';
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const LINK_POLL_MS = 1000;

let dev = null;          // Companion (wasm)
let ws = null;
let backoff = BACKOFF_MIN_MS;
let chain = Promise.resolve();   // every state change runs in order, saved before frames go
let chats = {};          // thread -> { messages: [], unread, last_at }
let active = null;       // the open thread
let quoting = null;      // msg_id being replied to
const typingTimers = {};
const t0 = performance.now();

// ---------------------------------------------------------------------------------------
// Storage: one IndexedDB object store; the device and the chats are AES-GCM encrypted under
// a key that WebCrypto generated as non-extractable (script can use it, never read it).
// ---------------------------------------------------------------------------------------

function idb() {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open(DB_NAME, 1);
    r.onupgradeneeded = () => r.result.createObjectStore(STORE);
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}
let dbp = null;
async function kv(mode, fn) {
  dbp = dbp || idb();
  const db = await dbp;
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const req = fn(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(req && req.result);
    tx.onerror = () => reject(tx.error);
  });
}
const get = (k) => kv('readonly', (s) => s.get(k));
const put = (k, v) => kv('readwrite', (s) => s.put(v, k));
const wipe = () => kv('readwrite', (s) => s.clear());

async function wrapKey() {
  let key = await get('key');
  if (!key) {
    key = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
    await put('key', key);
  }
  return key;
}
async function seal(bytes) {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, await wrapKey(), bytes);
  return { iv, ct: new Uint8Array(ct) };
}
async function unseal(rec) {
  return new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: rec.iv }, await wrapKey(), rec.ct));
}
async function persist() {
  if (!dev) return;
  const enc = new TextEncoder();
  await put('device', await seal(dev.save()));
  await put('chats', await seal(enc.encode(JSON.stringify(chats))));
}

// ---------------------------------------------------------------------------------------
// Connection: one WebSocket to this relay's /v1/ws, reconnecting with backoff.
// ---------------------------------------------------------------------------------------

function connect() {
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/v1/ws';
  const sock = new WebSocket(url);
  ws = sock;
  sock.binaryType = 'arraybuffer';
  sock.onopen = () => run(async () => {
    if (ws !== sock) return;
    sock.send(dev.connect());
  });
  sock.onmessage = (m) => run(async () => {
    if (ws !== sock) return;
    if (!(m.data instanceof ArrayBuffer)) { notice('The relay sent text on a binary session; ignored.'); return; }
    dev.on_message(new Uint8Array(m.data));
    await handle(JSON.parse(dev.take_events()));
    await persist();     // ratchets saved before our acks let the relay forget
    flush(sock);
  });
  sock.onclose = () => run(async () => {
    if (ws !== sock) return;
    ws = null;
    dev.on_close();
    if (loggingOut) { await loggedOut('you logged out on this page'); return; }
    if (dev.account()) {
      banner(`Not connected to the relay. Retrying in ${Math.round(backoff / 1000)} s…`);
    }
    const wait = backoff;
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    setTimeout(connect, wait + Math.random() * 250);
  });
}

function flush(sock) {
  for (let f = dev.take_outgoing(); f; f = dev.take_outgoing()) {
    if (sock && sock.readyState === WebSocket.OPEN) sock.send(f);
  }
}

function run(fn) {
  chain = chain.then(fn).catch((e) => notice(`Error: ${e && e.message ? e.message : e}`));
  return chain;
}

// Reconnects now (a refused resumption, a link poll), without the backoff banner.
function reconnectSoon(ms) {
  const sock = ws;
  ws = null;
  dev.on_close();
  if (sock) sock.close();
  setTimeout(connect, ms);
}

// ---------------------------------------------------------------------------------------
// Events from the session.
// ---------------------------------------------------------------------------------------

async function handle(events) {
  for (const e of events) {
    switch (e.type) {
      case 'waiting_for_link':
        $('pair-status').textContent = 'Waiting to be linked…';
        reconnectSoon(LINK_POLL_MS);
        break;
      case 'reconnect':
        reconnectSoon(0);
        break;
      case 'linked':
        log(`linked as ${e.account} device ${e.device} after ${Math.round(performance.now() - t0)} ms`);
        showMain();
        break;
      case 'ready':
        backoff = BACKOFF_MIN_MS;
        // Images are decrypted into memory only: fetch again after a reload.
        for (const c of Object.values(chats)) {
          for (const m of c.messages) {
            if (m.media && !m.media.url) { const id = m.media.id || m.id; mediaOf[id] = m; dev.request_media(id); }
          }
        }
        banner(null);
        showMain();
        log(`ready (${e.resumed ? 'IK resumption' : 'XX'})`);
        break;
      case 'history':
        for (const h of e.entries) {
          const mine = h.from === dev.account();
          addMessage(h.thread, { id: `h:${h.at_ms}:${h.from}`, from: h.from, body: h.body, at: h.at_ms, mine, status: mine ? 'sent' : null }, false);
        }
        notice(`${e.entries.length} messages of history arrived from your phone.`);
        break;
      case 'message':
        addMessage(e.thread, {
          id: e.msg_id, from: e.from, at: e.at_ms, reply_to: e.reply_to,
          body: e.kind === 'text' ? e.body : e.kind === 'media' ? 'Photo' : '[a message this page cannot show yet]',
        }, !e.muted);
        if (e.kind === 'media') {
          // A re-send after a recall replaces the original's image.
          const [, orig] = e.resend_of ? find(e.resend_of) : [null, null];
          const [, m] = orig ? [null, orig] : find(e.msg_id);
          if (orig) removeMessage(e.thread, e.msg_id);
          if (m) {
            m.media = { segments: e.segments, stages: [], blob: e.blob, id: e.msg_id, recalled: !!orig };
            mediaOf[e.msg_id] = m;
            dev.request_media(e.msg_id);
          }
        }
        if (e.thread === active && document.visibilityState === 'visible') markRead(active);
        break;
      case 'history_blob':
        historyBlobs.add(e.msg_id);
        dev.request_media(e.msg_id);
        break;
      case 'media_url':
        if (historyBlobs.has(e.msg_id)) loadHistory(e.msg_id, e.url); else loadMedia(e.msg_id, e.url);
        break;
      case 'sent':
        setStatus(e.msg_id, 'sent');
        break;
      case 'send_failed':
        setStatus(e.msg_id, 'failed', e.error);
        break;
      case 'receipt':
        for (const id of e.msg_ids) setStatus(id, e.kind === 'delivered' ? 'delivered' : 'read');
        break;
      case 'chat_state':
        typing(e.group || e.from, e.from, e.state);
        break;
      case 'presence':
        presence[e.account] = e;
        if (active === e.account) drawHeader();
        break;
      case 'muted':
        chat(e.thread).muted = e.forever || e.until_ms > Date.now();
        if (e.thread === active) drawHeader();
        break;
      case 'group_info':
        chat(e.group).name = e.subject;
        chat(e.group).members = e.members;
        break;
      case 'group':
        if (e.subject) chat(e.group).name = e.subject;
        addMessage(e.group, { id: `g:${Date.now()}:${Math.random()}`, system: true, body: `${e.actor} ${e.op} ${e.accounts.join(', ')} ${e.subject}`.trim() }, false);
        break;
      case 'undecryptable':
        addMessage(e.from, { id: e.msg_id, system: true, body: `A message from ${e.from} could not be read: ${e.error}` }, false);
        break;
      case 'safety_number':
        showSafety(e);
        break;
      case 'key_changed':
        keyChanged[e.account] = e.warning;
        addMessage(e.account, { id: `k:${Date.now()}:${Math.random()}`, system: true, body: e.warning }, false);
        if (active === e.account) $('accept-key').hidden = false;
        break;
      case 'bad_frame':
        notice(`A frame from the relay could not be read (${e.error}); carrying on.`);
        break;
      case 'relay_error':
        banner(relayMessage(e), true);
        break;
      case 'logged_out':
        await loggedOut(e.reason);
        break;
      default:
        notice(`Unknown event ${e.type}`);
    }
  }
  drawChats();
  drawMessages();
}

function relayMessage(e) {
  const wait = e.retry_after_ms ? ` Try again in ${Math.ceil(e.retry_after_ms / 1000)} s.` : '';
  switch (e.code) {
    case 'ERROR_CODE_BANNED': return `This account is banned: ${e.message}`;
    case 'ERROR_CODE_RATE_LIMITED': return `Slow down: the relay is rate limiting this device.${wait}`;
    case 'ERROR_CODE_SHUTTING_DOWN': return 'The relay is restarting; reconnecting…';
    case 'ERROR_CODE_HANDSHAKE_FAILED': return `The relay refused this page's connection (${e.message}); if the relay was upgraded, reload the page.`;
    case 'ERROR_CODE_SESSION_REPLACED': return 'This device connected from another tab or window; reload to use it here.';
    case 'ERROR_CODE_TOO_MANY_CONNECTIONS': return `The relay has too many connections; retrying.${wait}`;
    default: return `The relay said: ${e.message || e.code}${wait}`;
  }
}

let loggingOut = false;
async function loggedOut(reason) {
  loggingOut = false;
  if (ws) { const s = ws; ws = null; s.close(); }
  await wipe();
  chats = {};
  active = null;
  dev = new Companion();
  banner(`Logged out: ${reason}`, true);
  showPair();
  connect();
}

// ---------------------------------------------------------------------------------------
// Chats.
// ---------------------------------------------------------------------------------------

const presence = {};

const isGroup = (thread) => /^g[0-9a-zA-Z]{1,64}$/.test(thread);

function chat(thread) {
  if (!chats[thread]) chats[thread] = { messages: [], unread: 0, last_at: 0 };
  return chats[thread];
}

function addMessage(thread, m, countUnread) {
  const c = chat(thread);
  if (c.messages.some((x) => x.id === m.id)) return;
  m.at = m.at || Date.now();
  c.messages.push(m);
  c.messages.sort((a, b) => a.at - b.at);
  c.last_at = Math.max(c.last_at, m.at);
  if (countUnread && !m.mine && !(thread === active && document.visibilityState === 'visible')) c.unread += 1;
}

function find(msgId) {
  for (const [thread, c] of Object.entries(chats)) {
    const m = c.messages.find((x) => x.id === msgId);
    if (m) return [thread, m];
  }
  return [null, null];
}

const RANK = { queued: 0, sent: 1, delivered: 2, read: 3 };
function setStatus(msgId, status, error) {
  const [, m] = find(msgId);
  if (!m) return;
  if (status === 'failed') { m.status = 'failed'; m.error = error; return; }
  if ((RANK[status] || 0) > (RANK[m.status] || 0)) m.status = status;
}

function markRead(thread) {
  const c = chats[thread];
  if (!c) return;
  const ids = c.messages.filter((m) => !m.mine && !m.system && !m.read && /^[0-9a-f]{32}$/.test(m.id));
  c.unread = 0;
  if (!ids.length || !dev.is_ready()) return;
  // Receipts go to each message's sender (in a group too).
  const bySender = {};
  for (const m of ids) (bySender[m.from || thread] = bySender[m.from || thread] || []).push(m.id);
  for (const [to, list] of Object.entries(bySender)) dev.mark_read(to, JSON.stringify(list));
  ids.forEach((m) => { m.read = true; });
  flush(ws);
}

function typing(thread, from, state) {
  const c = chat(thread);
  c.state = state === 'paused' ? null : `${from} is ${state === 'recording' ? 'recording audio' : 'typing'}…`;
  clearTimeout(typingTimers[thread]);
  if (c.state) typingTimers[thread] = setTimeout(() => { c.state = null; drawHeader(); drawChats(); }, 10000);
  drawHeader();
}

// History from the phone in an encrypted blob: fetched, decrypted in the wasm, merged.
const historyBlobs = new Set();
async function loadHistory(msgId, url) {
  historyBlobs.delete(msgId);
  try {
    const r = await fetch(url);   // one sealed blob, no segment index
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const entries = JSON.parse(dev.open_history(msgId, new Uint8Array(await r.arrayBuffer())));
    run(() => handle([{ type: 'history', entries }]).then(persist));
  } catch (e) {
    notice(`The history from your phone could not be read (${e.message}); new messages still arrive.`);
  }
}

// Progressive image: the thumbnail (segment 0) first, then the full image (the last).
const mediaOf = {};   // media msg_id -> the message showing it (differs after a recall)
function removeMessage(thread, id) {
  const c = chats[thread];
  if (c) c.messages = c.messages.filter((x) => x.id !== id);
}
async function loadMedia(msgId, url) {
  const m = mediaOf[msgId] || find(msgId)[1];
  if (!m || !m.media) return;
  const segs = m.media.segments;
  const order = segs.length > 1 ? [0, segs.length - 1] : [0];
  for (const i of order) {
    const r = await fetch(`${url}&seg=${i}`);
    if (r.status === 410) {
      // Gone (expired or purged): ask the sender's phone to send it again.
      m.media.error = 'This image is gone from the relay; asking the sender for it again…';
      if (!m.media.recalled) run(async () => { m.media.recalled = true; dev.recall(m.from, m.id, Date.now()); await persist(); flush(ws); });
      break;
    }
    if (!r.ok) { m.media.error = `The image could not be fetched (HTTP ${r.status}).`; break; }
    const sealed = new Uint8Array(await r.arrayBuffer());
    let plain;
    try { plain = dev.open_segment(msgId, i, sealed); m.media.error = null; } catch (e) { m.media.error = `The image could not be read: ${e.message}`; break; }
    if (m.media.url) URL.revokeObjectURL(m.media.url);
    m.media.url = URL.createObjectURL(new Blob([plain], { type: segs[i].mime }));
    m.media.stages.push(i === 0 && segs.length > 1 ? 'thumb' : 'full');
    m.media.width = segs[i].width;
    m.media.height = segs[i].height;
    drawMessages();
  }
  drawMessages();
}

// ---------------------------------------------------------------------------------------
// Drawing (textContent only: nothing from the network is ever parsed as HTML).
// ---------------------------------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawChats() {
  const ul = $('chats');
  ul.replaceChildren();
  const order = Object.entries(chats).sort((a, b) => b[1].last_at - a[1].last_at);
  for (const [thread, c] of order) {
    const li = el('li', thread === active ? 'active' : '');
    li.dataset.thread = thread;
    li.append(el('span', 'name', c.name || thread));
    if (c.unread) li.append(el('span', c.muted ? 'unread quiet' : 'unread', String(c.unread)));
    const last = c.messages[c.messages.length - 1];
    li.append(el('span', 'last', c.state || (last ? last.body : '')));
    li.onclick = () => open(thread);
    ul.append(li);
  }
}

function ticks(m) {
  if (!m.mine) return null;
  const map = { queued: ['🕓', ''], sent: ['✓', ''], delivered: ['✓✓', ''], read: ['✓✓', 'read'], failed: ['!', 'failed'] };
  const [t, cls] = map[m.status || 'queued'];
  const s = el('span', `ticks ${cls}`.trim(), t);
  s.dataset.status = m.status || 'queued';
  if (m.error) s.title = m.error;
  return s;
}

function drawMessages() {
  const ul = $('messages');
  if (!active) { ul.replaceChildren(); return; }
  const c = chat(active);
  ul.replaceChildren();
  for (const m of c.messages) {
    const li = el('li', `msg${m.mine ? ' mine' : ''}${m.system ? ' system' : ''}`);
    li.dataset.id = m.id;
    if (m.reply_to) {
      const [, q] = find(m.reply_to);
      li.append(el('div', 'quoted', q ? q.body : 'a message'));
    }
    if (isGroup(active) && !m.mine && !m.system && m.from) li.append(el('div', 'from', m.from));
    if (m.media && m.media.url) {
      const img = el('img', 'photo');
      img.src = m.media.url;
      img.alt = 'image';
      img.dataset.stage = m.media.stages[m.media.stages.length - 1];
      li.append(img);
    } else if (m.media && m.media.error) {
      li.append(el('div', 'body', m.media.error));
    } else {
      li.append(el('div', 'body', m.body));
    }
    const meta = el('div', 'meta', m.at ? new Date(m.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '');
    const t = ticks(m);
    if (t) meta.append(t);
    li.append(meta);
    if (!m.system) li.ondblclick = () => { quoting = m.id; $('quote').textContent = `Replying to: ${m.body}`; $('quote').hidden = false; };
    ul.append(li);
  }
  ul.scrollTop = ul.scrollHeight;
  drawHeader();
}

function drawHeader() {
  if (!active) return;
  $('conv-title').textContent = `${chat(active).name || active}${chat(active).muted ? ' 🔕' : ''}`;
  $('mute').hidden = false;
  $('verify').hidden = isGroup(active);
  $('mute').textContent = chat(active).muted ? 'Unmute' : 'Mute';
  const c = chat(active);
  const p = presence[active];
  let state = c.state || '';
  if (!state && isGroup(active)) state = (chat(active).members || []).join(', ');
  if (!state && p) state = p.available ? 'online' : p.last_seen_ms ? `last seen ${new Date(p.last_seen_ms).toLocaleString()}` : '';
  $('conv-state').textContent = state;
}

function open(thread) {
  active = thread;
  $('safety').hidden = true;
  $('accept-key').hidden = !keyChanged[thread];
  chat(thread);
  $('text').disabled = false;
  $('send').disabled = false;
  markRead(thread);
  drawChats();
  drawMessages();
  $('text').focus();
  run(persist);
}

function banner(text, error) {
  const b = $('banner');
  b.hidden = !text;
  b.textContent = text || '';
  b.classList.toggle('error', !!error);
}

function notice(text) {
  $('notices').textContent = text;
  log(text);
}

function log(text) {
  console.log(`[relaybox] ${text}`);
}

function showPair() {
  $('loading').hidden = true;
  $('main').hidden = true;
  $('pair').hidden = false;
  const code = dev.pairing_code();
  $('pairing-code').textContent = code;
  // The SVG is generated by our own wasm from the code: no network input reaches innerHTML.
  $('qr').innerHTML = qr_svg(code);
  log(`pairing code shown after ${Math.round(performance.now() - t0)} ms`);
}

function showMain() {
  if (!$('main').hidden) return;
  $('loading').hidden = true;
  $('pair').hidden = true;
  $('main').hidden = false;
  $('me').textContent = `${dev.account()} · device ${dev.device()}`;
  drawChats();
}

// ---------------------------------------------------------------------------------------
// User actions.
// ---------------------------------------------------------------------------------------

$('compose').onsubmit = (ev) => {
  ev.preventDefault();
  const text = $('text').value;
  if (!text.trim() || !active) return;
  run(async () => {
    const id = dev.send_text(active, text, Date.now(), quoting || undefined);
    addMessage(active, { id, from: dev.account(), body: text, at: Date.now(), mine: true, status: 'queued', reply_to: quoting }, false);
    $('text').value = '';
    quoting = null;
    $('quote').hidden = true;
    drawChats();
    drawMessages();
    await persist();    // the outbox (same msg_id on a retry) is saved before it goes
    flush(ws);
  });
};

let composing = false;
$('text').oninput = () => {
  if (!active || !dev.is_ready()) return;
  const now = $('text').value.length > 0;
  if (now !== composing) {
    composing = now;
    dev.chat_state(active, now ? 'composing' : 'paused');
    flush(ws);
  }
};

// Safety numbers: the wasm claims the keys and computes the number; the QR's SVG is drawn by
// our own wasm from the digits, so no network input reaches innerHTML.
const keyChanged = {};
function showSafety(e) {
  $('safety').hidden = false;
  $('safety-with').textContent = e.account;
  $('safety-digits').textContent = e.grouped;
  $('safety-qr').innerHTML = e.qr_svg;
  const warning = keyChanged[e.account] || (e.changed.length ? `The identity key of ${e.account}'s device ${e.changed.join(', ')} changed since you last wrote: compare the number before you accept it.` : '');
  $('safety-changed').hidden = !warning;
  $('safety-changed').textContent = warning;
  $('accept-key').hidden = !warning;
}

$('verify').onclick = () => run(async () => {
  if (!active || !dev.is_ready()) { notice('Verifying needs a connection to the relay.'); return; }
  dev.verify_contact(active);
  flush(ws);
});

$('accept-key').onclick = () => run(async () => {
  if (!active) return;
  dev.accept_key(active);
  delete keyChanged[active];
  $('accept-key').hidden = true;
  $('safety-changed').hidden = true;
  await handle(JSON.parse(dev.take_events()));
  await persist();
  flush(ws);
});

$('safety-close').onclick = () => { $('safety').hidden = true; };

$('mute').onclick = () => run(async () => {
  if (!active || !dev.is_ready()) { notice('Muting needs a connection to the relay.'); return; }
  dev.mute(active, !chat(active).muted);
  flush(ws);
});

$('new-chat').onsubmit = (ev) => {
  ev.preventDefault();
  const to = $('new-chat-to').value.trim();
  if (!/^(\+[1-9][0-9]{7,14}|@[a-z0-9.-]{1,32})$/.test(to) && !isGroup(to)) { notice('A chat needs a number in international form, e.g. +14155550100, or a group id.'); return; }
  $('new-chat-to').value = '';
  open(to);
};

$('logout').onclick = () => run(async () => {
  if (!confirm('Log out of relaybox on this computer?')) return;
  loggingOut = true;
  dev.log_out();
  flush(ws);
  await handle(JSON.parse(dev.take_events()));
  // The relay may end the session before its answer arrives.
  setTimeout(() => run(async () => { if (loggingOut) await loggedOut('you logged out on this page'); }), 3000);
});

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && active) { markRead(active); drawChats(); }
});

// ---------------------------------------------------------------------------------------
// Start.
// ---------------------------------------------------------------------------------------

async function main() {
  await init();
  $('version').textContent = version();
  fetch('bundle.json').then((r) => r.json()).then((b) => {
    $('bundle-hash').textContent = b.sha256.slice(0, 16);
    $('bundle-hash').title = `SHA-256 of this page's files: ${b.sha256}; compare it with what your operator published.`;
    if (b.version !== version()) banner(`This page (${version()}) and the relay (${b.version}) differ: reload the page.`, true);
  }).catch(() => {});
  const rec = await get('device');
  if (rec) {
    try {
      dev = Companion.restore(await unseal(rec));
      const c = await get('chats');
      if (c) chats = JSON.parse(new TextDecoder().decode(await unseal(c)));
    } catch (e) {
      notice(`The saved device could not be read (${e.message}); starting afresh.`);
      await wipe();
      dev = null;
    }
  }
  if (!dev) dev = new Companion();
  if (dev.account()) showMain(); else showPair();
  // Decrypted images live in memory only.
  for (const c of Object.values(chats)) for (const m of c.messages) if (m.media) { m.media.url = null; m.media.stages = []; }
  await persist();
  connect();
}

main().catch((e) => {
  $('loading').textContent = `relaybox could not start: ${e && e.message ? e.message : e}`;
});

// For tests and the curious: the page's state, read-only.
window.relaybox = {
  chats: () => JSON.parse(JSON.stringify(chats)),
  account: () => dev && dev.account(),
  ready: () => !!dev && dev.is_ready(),
  presence: () => JSON.parse(JSON.stringify(presence)),
};
