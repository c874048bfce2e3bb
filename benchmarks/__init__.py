"""Benchmarks of ntk-repro against what a user would use instead, measured in the same run.

Run from the repository root (``make bench`` runs the first line)::

    python -m benchmarks --out results/bench         # ~35 min on 2 cores
    python -m benchmarks --out results/bench --quick  # small sizes, a few minutes
    python -m benchmarks --out results/bench --smoke  # tiny sizes: the test suite's smoke run

Writes ``<out>/{analytic,empirical,training,pipeline,generalization,hessian}.csv``,
``<out>/limits.csv`` (ns per element of the passes the analytic Gram is made of) and
``<out>/bench.png``. Each CSV row:
benchmark, size, implementation, time_s (min over ``--repeats`` ≥ 3 runs, more for runs
shorter than 1/3 s), ratio_to_ours (time_s / time_s of ntk-repro for the same benchmark and
size: > 1 means ntk-repro is faster), peak_mem_mb (peak RSS of the measuring process) and
extra_mem_mb (peak RSS minus the RSS after imports and inputs), first_call_s (the call before
the timed ones, where an implementation compiles), load_1min (load average while it ran: the
machine may be shared), note, and the machine string (cores, CPU, library versions).

1. analytic (:mod:`benchmarks.analytic`): Θ∞ Gram, float64, depth 4, ReLU, β = 0.1,
   n0 = 10, N up to 20000: ``kernels.theta_inf``; its generic torch path (the pre-fusion
   implementation); a whole-matrix numpy recursion as a user would write it;
   neural-tangents' jitted ``stax`` kernel_fn (x64).
2. empirical (:mod:`benchmarks.empirical`): exact NTK of a depth-4 ReLU MLP (float32),
   N = 256, widths 256/1024/4096: ``empirical.empirical_ntk`` (structured path); its
   ``method="func"`` (torch.func Jacobian contraction as in PyTorch's NTK tutorial);
   neural-tangents' ``empirical_ntk_fn`` with structured derivatives; one forward + backward
   pass of the same batch. Plus width 4096 at N = 1024 (memory).
3. training (:mod:`benchmarks.training`): ``training.train_ensemble`` with K = 10 inits
   together vs K sequential K = 1 runs, and vs the same step's matmuls alone (torch.bmm of
   the same shapes): seconds per step and FLOP/s by ``training.flops_per_step``, interleaved
   in one process so that the machine's load hits them alike.
4. pipeline (:mod:`benchmarks.pipeline`): a finished laptop run's job times (Snakemake's
   ``logs/**/*.benchmark.tsv``, only if ``results/checks.csv`` exists), and the paper preset's
   training cost estimated from the FLOP/s of (3).
5. generalization (:mod:`benchmarks.generalization`): test-risk curves of kernel ridge
   regression over 50 ridges at the same N: ``generalization.krr_predict`` (one eigh for every
   ridge) vs scikit-learn's ``KernelRidge`` refitted per ridge on the same precomputed Grams.
6. hessian (:mod:`benchmarks.hessian`): the top-20 eigenvalues of the loss Hessian of a
   depth-3 net (up to 108k parameters): ``hessian.top_eigenpairs`` (Lanczos on torch.func
   HVPs) vs the dense autograd Hessian where it fits and power iteration with deflation;
   accuracy (eigenvalue error, residual ‖Hv − λv‖/|λ|) in the note.

Every measurement runs in a fresh subprocess (:mod:`benchmarks.worker`), so peak memory is
that of one implementation and one size, and a run that exceeds ``--mem-cap-gb`` is killed and
reported instead of taking the machine down. neural-tangents runs in the interpreter given by
``--nt-python`` (or $NTK_REPRO_NT_PYTHON), by default this one if it can import it; without
one, its rows are left out and the log says so. The library is imported as the installed
package ``ntk_repro``; files of the project (presets, a finished run) are found from this
folder's location, not from the working directory.
"""
