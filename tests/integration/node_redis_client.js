// Drives a shoal cluster with node-redis (Debian's node-redis, the `redis`
// package v4), as a Node.js application would: a plain client on every node
// and a cluster client. Hashes, lists, sets, sorted sets, MULTI/EXEC, a WATCH
// retry loop on three nodes at once, and BLPOP with a timeout and woken by a
// push from another node. Every reply is checked; the first mismatch throws,
// and the process exits non-zero with it.
//
//   NODE_PATH=/usr/share/nodejs node node_redis_client.js host:port host:port ...
'use strict';
const assert = require('node:assert/strict');
const { createClient, createCluster, commandOptions, WatchError } = require('redis');

const nodes = process.argv.slice(2);
if (nodes.length < 2) {
  console.error('usage: node node_redis_client.js host:port host:port [...]');
  process.exit(2);
}
const url = (hp) => `redis://${hp}`;
const tag = `nr${process.pid}`;  // keys of this run only
const plain = (o) => ({ ...o });  // node-redis answers maps as null-prototype objects

async function plainTypes(c) {
  // One hash tag: a multi-key DEL must stay in one slot, as in Redis Cluster.
  const h = `{${tag}}:h`, l = `{${tag}}:l`, s = `{${tag}}:s`, z = `{${tag}}:z`;
  assert.equal(await c.hSet(h, { a: '1', b: '2' }), 2);
  assert.deepEqual(plain(await c.hGetAll(h)), { a: '1', b: '2' });
  assert.equal(await c.hIncrBy(h, 'a', 41), 42);
  assert.deepEqual(await c.hmGet(h, ['a', 'missing', 'b']), ['42', null, '2']);
  assert.equal(await c.rPush(l, ['x', 'y', 'z']), 3);
  assert.equal(await c.lPush(l, 'w'), 4);
  assert.deepEqual(await c.lRange(l, 0, -1), ['w', 'x', 'y', 'z']);
  assert.equal(await c.lPop(l), 'w');
  assert.equal(await c.sAdd(s, ['m1', 'm2', 'm2', 'm3']), 3);
  assert.deepEqual((await c.sMembers(s)).sort(), ['m1', 'm2', 'm3']);
  assert.equal(await c.sIsMember(s, 'm2'), true);
  assert.equal(await c.zAdd(z, [{ score: 2, value: 'b' }, { score: 1, value: 'a' }, { score: 3.5, value: 'c' }]), 3);
  assert.deepEqual(await c.zRangeWithScores(z, 0, -1),
                   [{ value: 'a', score: 1 }, { value: 'b', score: 2 }, { value: 'c', score: 3.5 }]);
  assert.equal(await c.zIncrBy(z, 10, 'a'), 11);
  assert.deepEqual(await c.zRange(z, 0, -1, { REV: true }), ['a', 'c', 'b']);
  await assert.rejects(c.lPush(h, 'x'), /WRONGTYPE/);
  assert.equal(await c.del([h, l, s, z]), 4);
}

async function transaction(c) {
  const k = `{${tag}}:tx`;
  const out = await c.multi().set(k, '1').incr(k).hSet(`{${tag}}:txh`, 'f', 'v').get(k).exec();
  assert.deepEqual(out, ['OK', 2, 1, '2']);
  // A command the server refuses while queueing aborts the whole transaction
  // (node-redis reports that command's error, as with redis-server).
  await assert.rejects(c.multi().set(k, 'no').addCommand(['NOSUCHCOMMAND']).exec(), /unknown command 'NOSUCHCOMMAND'/);
  assert.equal(await c.get(k), '2');
  await c.del([k, `{${tag}}:txh`]);
}

// Three clients, one per node, each adding `per` to one counter under WATCH.
async function watchLoop(clients, per) {
  const k = `${tag}:watched`;
  await clients[0].set(k, '0');
  let aborted = 0;
  await Promise.all(clients.map((c) => (async () => {
    for (let i = 0; i < per; i++) {
      for (let attempt = 0; ; attempt++) {
        assert.ok(attempt < 1000, 'WATCH loop never got through');
        try {
          await c.executeIsolated(async (iso) => {
            await iso.watch(k);
            const v = Number(await iso.get(k));
            await iso.multi().set(k, String(v + 1)).exec();
          });
          break;
        } catch (e) {
          if (!(e instanceof WatchError)) throw e;
          aborted++;
        }
      }
    }
  })()));
  assert.equal(await clients[0].get(k), String(per * clients.length));
  await clients[0].del(k);
  return aborted;
}

async function blockingPops(waiter, pusher) {
  const q = `${tag}:q`;
  let t = Date.now();
  assert.equal(await waiter.blPop(commandOptions({ isolated: true }), q, 0.3), null);
  const waited = Date.now() - t;
  assert.ok(waited >= 250 && waited < 5000, `BLPOP timeout took ${waited} ms`);
  t = Date.now();
  const popped = waiter.blPop(commandOptions({ isolated: true }), q, 10);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await pusher.rPush(q, 'job'), 1);
  assert.deepEqual(plain(await popped), { key: q, element: 'job' });
  assert.ok(Date.now() - t < 5000);
  assert.equal(await pusher.exists(q), 0);
}

async function clusterClient() {
  const cluster = createCluster({ rootNodes: nodes.map((hp) => ({ url: url(hp) })) });
  await cluster.connect();
  try {
    // Keys over many slots, so every node leads some of them.
    for (let i = 0; i < 60; i++) {
      assert.equal(await cluster.hSet(`${tag}:ch${i}`, { n: String(i), sq: String(i * i) }), 2);
      assert.equal(await cluster.zAdd(`${tag}:cz${i}`, { score: i, value: `m${i}` }), 1);
    }
    for (let i = 0; i < 60; i++) {
      assert.deepEqual(plain(await cluster.hGetAll(`${tag}:ch${i}`)), { n: String(i), sq: String(i * i) });
      assert.equal(await cluster.zScore(`${tag}:cz${i}`, `m${i}`), i);
      assert.equal(await cluster.del(`${tag}:ch${i}`), 1);
      assert.equal(await cluster.del(`${tag}:cz${i}`), 1);
    }
    const k = `{${tag}}:ctx`;
    const out = await cluster.multi(k).set(k, '5').incrBy(k, 5).lPush(`{${tag}}:cl`, 'e').exec();
    assert.deepEqual(out, ['OK', 10, 1]);
    assert.equal(await cluster.lPop(`{${tag}}:cl`), 'e');
    assert.equal(await cluster.blPop(commandOptions({ isolated: true }), `${tag}:cq`, 0.2), null);
    await cluster.del(k);
  } finally {
    await cluster.quit();
  }
}

(async () => {
  const clients = nodes.map((hp) => createClient({ url: url(hp) }));
  for (const c of clients) {
    c.on('error', (e) => { console.error(`client error: ${e}`); process.exitCode = 1; });
    await c.connect();
  }
  try {
    for (const c of clients) {
      await plainTypes(c);
      await transaction(c);
    }
    const aborted = await watchLoop(clients, 20);
    await blockingPops(clients[0], clients[1]);
    await blockingPops(clients[1], clients[clients.length - 1]);
    await clusterClient();
    console.log(`node-redis: types, MULTI/EXEC and BLPOP on ${clients.length} nodes and a cluster client; ` +
                `WATCH loop ${20 * clients.length} increments, ${aborted} aborted and retried`);
  } finally {
    for (const c of clients) await c.quit();
  }
})().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
