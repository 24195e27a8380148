// The ES module face of forkyard-pool's Node worker: `import { serve } from 'forkyard-pool'`.
import worker from './index.js';

export const { serve, TaskError, describeError, DEFAULT_MAX_LINE } = worker;
export default worker;
