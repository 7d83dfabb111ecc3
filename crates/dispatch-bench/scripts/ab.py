#!/usr/bin/env python3
"""A/B time-to-agent: alternate `dispatch` binaries run by run, in the same minutes.

Usage: N=200 python3 crates/dispatch-bench/scripts/ab.py OLD/dispatch NEW/dispatch [...]
Each run: `dispatch run <clock agent> --detach`, then `dispatch wait`; the latency is
from just before the spawn to the nanosecond timestamp the agent (`date +%s%N`) printed.
"""
import subprocess,time,os,sys,tempfile,statistics
bins=sys.argv[1:]
N=int(os.environ.get('N','150'))
root=tempfile.mkdtemp(dir=os.environ.get('TMPDIR','/tmp'))
ag=os.path.join(root,'clock'); os.makedirs(ag)
open(os.path.join(ag,'Agentfile'),'w').write('NAME clock\nCOMMAND ["date", "+%s%N"]\n')
res={b:[] for b in bins}; det={b:[] for b in bins}
for b in bins:
    env=dict(os.environ); env['DISPATCH_ROOT']=os.path.join(root,os.path.basename(b)+'.d')
    for i in range(5): subprocess.run([b,'run',ag,'--detach'],env=env,stdout=subprocess.DEVNULL)
for i in range(N):
    for b in bins:
        env=dict(os.environ); env['DISPATCH_ROOT']=os.path.join(root,os.path.basename(b)+'.d')
        t0=time.time_ns(); p0=time.perf_counter()
        out=subprocess.run([b,'run',ag,'--detach'],env=env,capture_output=True,text=True)
        det[b].append((time.perf_counter()-p0)*1000)
        rid=out.stdout.strip()
        subprocess.run([b,'wait',rid],env=env,stdout=subprocess.DEVNULL)
        log=open(os.path.join(env['DISPATCH_ROOT'],'runs',rid+'.log')).read().splitlines()
        ns=int([l for l in log if not l.startswith('[dispatch]')][0])
        res[b].append((ns-t0)/1e6)
for b in bins:
    print(f"{b:40} tta median {statistics.median(res[b]):.2f} ms  p90 {sorted(res[b])[int(len(res[b])*.9)]:.2f}   detach median {statistics.median(det[b]):.2f}")
