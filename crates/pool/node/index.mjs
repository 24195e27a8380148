// The ES module face of forkyard-pool's Node worker: `import { serve } from 'forkyard-pool'`.
import worker from './index.js';

export const { serve, TaskError, describeError, errorParts, DEFAULT_MAX_LINE, DETAIL_MAX, UNSENDABLE } = worker;
export default worker;
