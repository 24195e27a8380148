// Baseline for `cargo run --release -p forkyard-pool --example compare`:
// tiny tasks through Node's child_process.fork message passing, 2 workers,
// up to 1,000 in flight. A warm-up of a tenth as many tasks first (both
// workers up, the JIT warm), not timed, as the pool is built and warmed
// before its clock starts. Prints one line: `tasks_per_sec N`.
const { fork } = require('child_process');

if (process.argv[2] === 'worker') {
  process.on('message', (m) => process.send({ id: m.id, result: m.n + 1 }));
  return;
}

const total = parseInt(process.argv[2] || '100000', 10);
const warmup = Math.ceil(total / 10);
const inFlightMax = 1000;
const workers = [fork(__filename, ['worker']), fork(__filename, ['worker'])];

// Runs `count` tasks with up to 1,000 in flight; calls `then` when all are answered.
function run(count, then) {
  let sent = 0, done = 0, inFlight = 0, next = 0;
  const pump = () => {
    while (inFlight < inFlightMax && sent < count) {
      workers[next].send({ id: sent, n: sent });
      next = (next + 1) % workers.length;
      sent++; inFlight++;
    }
  };
  const onMessage = () => {
    done++; inFlight--;
    if (done === count) {
      for (const w of workers) w.off('message', onMessage);
      then();
      return;
    }
    pump();
  };
  for (const w of workers) w.on('message', onMessage);
  pump();
}

run(warmup, () => {
  const start = process.hrtime.bigint();
  run(total, () => {
    const secs = Number(process.hrtime.bigint() - start) / 1e9;
    console.log(`tasks_per_sec ${Math.round(total / secs)}`);
    for (const x of workers) x.kill();
  });
});
