'use strict';
// The stock npm RocketMQ 4.x client ali-ons against a running rocketraft: each scenario
// uses only ali-ons' public API (Producer, Consumer, Message) and checks what it got back.
// tests/t47_stock_client_ali_ons.rs starts `rocketraft dev` and runs this; by hand:
//
//   node scenarios.js plain 127.0.0.1:9876      # rocketraft dev with the overrides t47 gives
//   node scenarios.js acl 127.0.0.1:9876        # ... and aclEnable=true with t47's accounts
//
// Prints one line per scenario ("ok NAME ..." or "FAILED NAME: why"), lines "fact KEY VALUE"
// that the Rust test checks on the broker's side, and a last line
// "ali-ons: N passed, M failed". Exits 1 if a scenario failed. Every wait is bounded.

const { Producer, Consumer, Message } = require('ali-ons');
const ConsumeFromWhere = require('ali-ons/lib/consumer/consume_from_where');

const [ mode, nameSrv ] = process.argv.slice(2);
if (![ 'plain', 'acl' ].includes(mode) || !nameSrv) {
  console.error('usage: node scenarios.js plain|acl NAMESRV_ADDR');
  process.exit(2);
}

// ali-ons falls back to an internet address book (onsAddr) unless nameSrv is given; it is
// always given here, and this stands in for the HTTP client it would use, so that nothing
// can ever reach past loopback.
const httpclient = {
  async request(url) {
    throw new Error(`ali-ons tried to fetch ${url}: nothing may leave loopback`);
  },
};

const POISON = 'poison: this message always fails';
const errors = [];
const logger = {
  info() {},
  debug() {},
  warn() {},
  error(...args) {
    errors.push(args.map(String).join(' '));
  },
};

function base(extra) {
  return Object.assign({ httpclient, nameSrv, logger }, extra);
}

function producer(group, instanceName, credentials) {
  return new Producer(base(Object.assign({
    producerGroup: group,
    instanceName,
    retryTimesWhenSendFailed: 0,
  }, credentials || {})));
}

// A push consumer that records every delivery; `handler(msg)` may return ACTION_RETRY.
function consumer(group, topic, options, handler) {
  const c = new Consumer(base(Object.assign({
    consumerGroup: group,
    consumeFromWhere: ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET,
    rebalanceInterval: 1000,
    persistConsumerOffsetInterval: 1000,
  }, options.client || {})));
  const got = [];
  c.on('error', err => {
    if (!err.message.includes(POISON)) errors.push(`${group}: ${err.message}`);
  });
  c.subscribe(topic, options.expression || '*', async msg => {
    const at = Date.now();
    got.push({ body: msg.body.toString(), tags: msg.tags, keys: msg.keys, props: msg.properties,
      reconsumeTimes: msg.reconsumeTimes, msgId: msg.msgId, at });
    return handler ? handler(msg) : undefined;
  });
  return { c, got };
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return;
    await sleep(100);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

function sameSet(got, want, what) {
  const g = [ ...got ].sort();
  const w = [ ...want ].sort();
  if (JSON.stringify(g) !== JSON.stringify(w)) {
    throw new Error(`${what}: got ${JSON.stringify(g)}, want ${JSON.stringify(w)}`);
  }
}

const distinct = list => [ ...new Set(list) ];

let passed = 0;
let failed = 0;
async function scenario(name, body) {
  try {
    const detail = await body();
    passed++;
    console.log(`ok ${name}${detail ? ' ' + detail : ''}`);
  } catch (err) {
    failed++;
    console.log(`FAILED ${name}: ${err && err.stack || err}`);
  }
}

function fact(key, value) {
  console.log(`fact ${key} ${JSON.stringify(value)}`);
}

async function sendAll(p, messages) {
  const results = [];
  for (const m of messages) {
    const r = await p.send(m);
    if (r.sendStatus !== 'SEND_OK') throw new Error(`send answered ${JSON.stringify(r)}`);
    if (!r.msgId) throw new Error(`send answered no msgId: ${JSON.stringify(r)}`);
    results.push(r);
  }
  return results;
}

async function plain() {
  const p = producer('ali-producers', 'ali-plain');

  // Sync sends with tags and keys (t47 creates the topics first: ali-ons cannot send to a
  // topic that does not exist yet), one body big enough for ali-ons to compress.
  const orders = [];
  for (let i = 0; i < 20; i++) {
    const m = new Message('AliOrders', i % 2 === 0 ? 'TagA' : 'TagB', `order-${i}`);
    m.keys = [ `key-${i}` ];
    orders.push(m);
  }
  const big = 'x'.repeat(8 * 1024) + '-big';
  orders.push(new Message('AliOrders', 'TagA', big));
  const allBodies = orders.map(m => m.body.toString()).slice(0, 20).concat([ big ]);
  const tagABodies = allBodies.filter((b, i) => i === 20 || i % 2 === 0);
  let sent = [];
  await scenario('send', async () => {
    sent = await sendAll(p, orders);
    const queues = distinct(sent.map(r => r.messageQueue.queueId));
    return `${sent.length} SEND_OK over queues ${queues.join(',')}`;
  });

  // Delayed (RocketMQ's delayTimeLevel) and retried messages, then filters, all waiting
  // side by side.
  const retry = consumer('ali-retry', 'AliRetry', {}, msg =>
    (msg.reconsumeTimes === 0 ? Consumer.ACTION_RETRY : undefined));
  // Fails by throwing: ali-ons ignores ACTION_RETRY from a message redelivered from
  // %RETRY% (its retry-topic handler drops the value), but sends it back after a throw.
  const dlq = consumer('ali-dlq', 'AliDlq', { client: { maxReconsumeTimes: 1 } }, () => {
    throw new Error(POISON);
  });
  const delay = consumer('ali-delay', 'AliDelay', {});
  const sql = consumer('ali-sql', 'AliSql', { expression: { expressionType: 'SQL92', subString: 'a > 5' } });
  const all = consumer('ali-all', 'AliOrders', {});
  const tagA = consumer('ali-tag-a', 'AliOrders', { expression: 'TagA' });
  const broadcast = [ 'b1', 'b2' ].map(instanceName =>
    consumer('ali-broadcast', 'AliOrders', { client: { isBroadcast: true, instanceName } }));

  await scenario('push consume, clustering', async () => {
    await until('every order', 30000, () => distinct(all.got.map(g => g.body)).length >= allBodies.length);
    sameSet(distinct(all.got.map(g => g.body)), allBodies, 'bodies');
    const first = all.got.find(g => g.body === 'order-3');
    if (first.tags !== 'TagB' || String(first.keys) !== 'key-3') {
      throw new Error(`order-3 came back with tags ${first.tags} and keys ${first.keys}`);
    }
    const ids = new Set(sent.map(r => r.msgId));
    const unknown = all.got.filter(g => !ids.has(g.msgId));
    if (unknown.length) throw new Error(`msgIds not answered by send: ${unknown.map(g => g.msgId)}`);
    return `${all.got.length} deliveries, ${allBodies.length} distinct bodies, tags, keys and msgIds as sent, the 8 KiB body decompressed`;
  });

  await scenario('tag filter', async () => {
    await until('the TagA orders', 30000, () => distinct(tagA.got.map(g => g.body)).length >= tagABodies.length);
    await sleep(1500);
    sameSet(distinct(tagA.got.map(g => g.body)), tagABodies, 'TagA bodies');
    return `${tagABodies.length} TagA orders, no TagB`;
  });

  await scenario('push consume, broadcasting', async () => {
    for (const b of broadcast) {
      await until('every order on each broadcast consumer', 30000,
        () => distinct(b.got.map(g => g.body)).length >= allBodies.length);
      sameSet(distinct(b.got.map(g => g.body)), allBodies, 'broadcast bodies');
    }
    return `both consumers of one group got all ${allBodies.length}`;
  });

  const sqlBodies = [];
  await scenario('sql92 filter', async () => {
    const msgs = [];
    for (let i = 0; i < 10; i++) {
      const m = new Message('AliSql', 'TagS', `sql-${i}`);
      m.properties.a = String(i);
      msgs.push(m);
      if (i > 5) sqlBodies.push(`sql-${i}`);
    }
    await sendAll(p, msgs);
    await until('the messages with a > 5', 30000, () => distinct(sql.got.map(g => g.body)).length >= sqlBodies.length);
    await sleep(1500);
    sameSet(distinct(sql.got.map(g => g.body)), sqlBodies, 'SQL92 bodies');
    return 'a > 5 matched exactly 4 of 10';
  });

  await scenario('delayTimeLevel', async () => {
    const m = new Message('AliDelay', 'TagD', 'delayed');
    m.delayTimeLevel = 18;
    const at = Date.now();
    await sendAll(p, [ m ]);
    await until('the delayed message', 30000, () => delay.got.length >= 1);
    const waited = delay.got[0].at - at;
    if (waited < 2900) throw new Error(`delivered after ${waited} ms, level 18 is 3 s here`);
    return `delivered after ${waited} ms (level 18 = 3 s)`;
  });

  await scenario('retry (ACTION_RETRY, then redelivered from %RETRY%)', async () => {
    const bodies = [ 'retry-0', 'retry-1', 'retry-2' ];
    await sendAll(p, bodies.map(b => new Message('AliRetry', 'TagR', b)));
    await until('each retried message again', 30000,
      () => distinct(retry.got.filter(g => g.reconsumeTimes >= 1).map(g => g.body)).length >= bodies.length);
    sameSet(distinct(retry.got.filter(g => g.reconsumeTimes === 0).map(g => g.body)), bodies, 'first tries');
    sameSet(distinct(retry.got.filter(g => g.reconsumeTimes === 1).map(g => g.body)), bodies, 'second tries');
    return 'each message came back once with reconsumeTimes 1';
  });

  await scenario('dead letter after maxReconsumeTimes', async () => {
    await sendAll(p, [ new Message('AliDlq', 'TagX', 'poison') ]);
    await until('the poison message twice', 30000, () => dlq.got.length >= 2);
    // The second send-back (the one that dead-letters it) goes out after the handler has
    // returned: give it time before the consumer closes.
    await sleep(2000);
    if (dlq.got.length !== 2) throw new Error(`delivered ${dlq.got.length} times, not 2`);
    fact('dlq-group', 'ali-dlq');
    fact('dlq-body', 'poison');
    return `delivered ${dlq.got.length} times (reconsumeTimes ${dlq.got.map(g => g.reconsumeTimes)}); the broker's %DLQ% is checked by t47`;
  });

  for (const x of [ retry, dlq, delay, sql, all, tagA, ...broadcast ]) {
    await x.c.close();
  }
  await p.close();
}

async function acl() {
  const admin = { accessKey: 'ali-admin', secretKey: 'ali-admin-secret' };
  const p = producer('ali-acl-producers', 'ali-acl-admin', admin);
  const bodies = [ 0, 1, 2, 3, 4 ].map(i => `signed-${i}`);
  await scenario('acl: signed send', async () => {
    await sendAll(p, bodies.map(b => new Message('AliAcl', 'TagA', b)));
    return `${bodies.length} SEND_OK, signed with HmacSHA1 by ali-ons`;
  });
  await scenario('acl: signed push consume', async () => {
    const c = consumer('ali-acl-readers', 'AliAcl', { client: admin });
    try {
      await until('the signed sends', 30000, () => distinct(c.got.map(g => g.body)).length >= bodies.length);
      sameSet(distinct(c.got.map(g => g.body)), bodies, 'bodies');
    } finally {
      await c.c.close();
    }
    return 'all signed sends consumed';
  });
  async function refused(name, instanceName, credentials) {
    await scenario(name, async () => {
      const q = producer('ali-acl-producers', instanceName, credentials);
      let refusal;
      try {
        await q.send(new Message('AliAcl', 'TagA', `must-not-be-stored-${instanceName}`));
      } catch (err) {
        refusal = err.message.split('\n')[0].slice(0, 160);
      }
      // Its unregistration is refused too, for the same reason.
      await q.close().catch(() => {});
      if (!refusal) throw new Error('the send was accepted');
      return `refused: ${refusal}`;
    });
  }
  await refused('acl: wrong secret refused', 'ali-acl-wrong', { accessKey: 'ali-admin', secretKey: 'not-the-secret' });
  await refused('acl: read-only account may not send', 'ali-acl-reader', { accessKey: 'ali-reader', secretKey: 'ali-reader-secret' });
  await refused('acl: unsigned send refused', 'ali-acl-none', {});
  fact('acl-stored', bodies);
  await p.close();
}

(async () => {
  const hardStop = setTimeout(() => {
    console.log('FAILED all: the scenarios did not end within 150 s');
    process.exit(1);
  }, 150000);
  await (mode === 'plain' ? plain() : acl());
  clearTimeout(hardStop);
  for (const e of distinct(errors).slice(0, 20)) console.log(`client error: ${e}`);
  console.log(`ali-ons: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})().catch(err => {
  console.log(`FAILED all: ${err && err.stack || err}`);
  process.exit(1);
});
