// The shipped WebAssembly (web/dist/, exactly what the relay serves) driven from Node over the
// relay's Noise/TCP transport, no browser: a protocol break between the wasm client core and
// the relay shows here even where Chromium is not installed. Run by tests/web_companion.rs.
//
// Prints one JSON line per milestone on stdout: {"code": …} (link it), {"ready": …},
// {"history": n}, then (after the primary unlinked it) {"logged_out": reason} and exits 0;
// exits 1 on an error or after TIMEOUT_MS.
import { gunzipSync } from 'node:zlib';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import net from 'node:net';

const TIMEOUT_MS = 30000;
const [host, port] = process.env.RELAY_TCP.split(':');
const dist = new URL('../../web/dist/', import.meta.url);
const dir = mkdtempSync(join(tmpdir(), 'relaybox-wasm-'));
const glue = join(dir, 'relaybox_web.js');
writeFileSync(glue, gunzipSync(readFileSync(new URL('relaybox_web.js.gz', dist))));
const wasm = await import(pathToFileURL(glue).href);
wasm.initSync({ module: gunzipSync(readFileSync(new URL('relaybox_web_bg.wasm.gz', dist))) });
rmSync(dir, { recursive: true, force: true });

const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const dev = new wasm.Companion();
say({ code: dev.pairing_code() });
setTimeout(() => { say({ error: 'timed out' }); process.exit(1); }, TIMEOUT_MS).unref();

function frame(bytes) {
  const f = Buffer.alloc(2 + bytes.length);
  f.writeUInt16BE(bytes.length, 0);
  Buffer.from(bytes).copy(f, 2);
  return f;
}

function session() {
  const sock = net.connect({ host, port: Number(port) });
  let buf = Buffer.alloc(0);
  sock.on('connect', () => sock.write(frame(dev.connect())));
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      const n = buf.readUInt16BE(0);
      dev.on_message(new Uint8Array(buf.subarray(2, 2 + n)));
      buf = buf.subarray(2 + n);
      for (let o = dev.take_outgoing(); o; o = dev.take_outgoing()) sock.write(frame(o));
      for (const e of JSON.parse(dev.take_events())) {
        if (process.env.VERBOSE) console.error(JSON.stringify(e));
        if (e.type === 'waiting_for_link' || e.type === 'reconnect') {
          sock.retried = true;
          sock.destroy();
          setTimeout(session, 300);
          return;
        }
        if (e.type === 'ready') say({ ready: e });
        if (e.type === 'history') say({ history: e.entries.length });
        if (e.type === 'logged_out') { say({ logged_out: e.reason }); process.exit(0); }
        if (e.type === 'relay_error' || e.type === 'bad_frame') { say({ error: e }); process.exit(1); }
      }
    }
  });
  sock.on('error', (e) => { say({ error: String(e) }); process.exit(1); });
  // The relay ends a revoked device's session: reconnect, and learn why.
  sock.on('close', () => {
    if (process.env.VERBOSE) console.error('closed');
    if (!sock.retried) setTimeout(session, 200);
  });
}
session();
