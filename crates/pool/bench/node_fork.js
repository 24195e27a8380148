// Baseline for `cargo run --release -p forkyard-pool --example compare`:
// tiny tasks through Node's child_process.fork message passing, 2 workers,
// up to 1,000 in flight. Prints one line: `tasks_per_sec N`.
const { fork } = require('child_process');

if (process.argv[2] === 'worker') {
  process.on('message', (m) => process.send({ id: m.id, result: m.n + 1 }));
  return;
}

const total = parseInt(process.argv[2] || '100000', 10);
const inFlightMax = 1000;
const workers = [fork(__filename, ['worker']), fork(__filename, ['worker'])];
let sent = 0, done = 0, inFlight = 0, next = 0;
const start = process.hrtime.bigint();

function pump() {
  while (inFlight < inFlightMax && sent < total) {
    workers[next].send({ id: sent, n: sent });
    next = (next + 1) % workers.length;
    sent++; inFlight++;
  }
}
for (const w of workers) {
  w.on('message', () => {
    done++; inFlight--;
    if (done === total) {
      const secs = Number(process.hrtime.bigint() - start) / 1e9;
      console.log(`tasks_per_sec ${Math.round(total / secs)}`);
      for (const x of workers) x.kill();
      return;
    }
    pump();
  });
}
pump();
