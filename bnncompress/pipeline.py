"""The one pack pipeline: posterior rows -> quantizer passes -> entropy coder -> archive records.

Every tensor is processed in its archive coding blocks (whole rows), grouped into tasks of
about ``executor.task_symbols`` weights that an executor runs (:mod:`bnncompress.executors`):

1. statistics of each block (:meth:`Quantizer.statistics`) and the rate-control subsample;
   the quantizer is fitted on the driver (it may map more passes);
2. rate control: lambda is searched on the subsample, each check on all weights is one
   histogram pass (plus the passes the method makes at that rate);
3. one pass that entropy-codes each block at the chosen lambda, from the grid indices the
   last histogram pass kept (within a memory budget), or by assigning them again.

A tensor in memory, one streamed from a file, and one read by Dask workers differ only in
their row source and executor: the archive bytes are the same, because every block is
coded on its own and everything reduced across blocks is exact or combined in block order.
Each tensor's passes are its :class:`~bnncompress.tensorjob.TensorJob`'s; this module runs them
for every tensor of a pack: fitted (:func:`fit_jobs`), lambda chosen, coded (:func:`code_jobs`).
"""

from __future__ import annotations

from .executors import Executor
from .posterior import TensorPosterior
from .progress import Progress
from .quantizers import Quantizer
from .ratecontrol import choose_lambda, sample_positions, whole_rows
from .records import TensorRecord, common_counts_dtype, raw_payload_bytes
from .tasks import Quality, quality_notes
from .tensorjob import KeepBudget, TensorJob

#: Bytes of pass data (a transform's rotated rows) a pack may keep, shared by its tensors' sizes: in memory,
#: and streamed (each tensor kept up to 256 MiB until the pack ended: 1.2 GiB for 8 tensors).
PASS_DATA_BYTES, STREAMED_PASS_DATA_BYTES = 1 << 30, 1 << 28


def quantize_and_code(
    tensors: dict[str, TensorPosterior],
    quantizer: Quantizer,
    executor: Executor,
    bits: float | None,
    lam: float | None,
    report: Progress,
) -> tuple[list[TensorRecord], float, list[str]]:
    """Quantize and entropy-code every tensor; the archive's records, the lambda used, and
    one-line notes on values a user would not expect to lose (see :func:`quality_notes`)."""
    jobs = fit_jobs(tensors, quantizer, executor, bits is not None, report)
    lam = choose_lambda(jobs, bits, lam, quantizer.default_lam, jobs_have_sample(jobs), report)
    records, notes = code_jobs(jobs, lam, report)
    return records, float(lam), notes


def fit_jobs(
    tensors: dict[str, TensorPosterior], quantizer: Quantizer, executor: Executor, searched: bool, report: Progress
) -> list[TensorJob]:
    """Every tensor fitted, as rate control and the coder take it; ``searched``: lambda will be searched
    (large posteriors then get a rate-control subsample)."""
    names = list(tensors)
    positions = sample_positions([tensors[n].size for n in names]) if searched else None
    if positions is not None and quantizer.whole_row_samples:
        positions = [whole_rows(p, tensors[n].row_size) for p, n in zip(positions, names)]
    budget = KeepBudget(executor.keep_bytes)
    total = sum(tensors[n].size for n in names)
    jobs = []
    for i, name in enumerate(names):
        report("fitting", i, len(names))
        sample = None if positions is None else positions[i]
        kept = PASS_DATA_BYTES if tensors[name].in_memory else STREAMED_PASS_DATA_BYTES  # (rotated rows, ...)
        share = kept * tensors[name].size // max(total, 1)
        jobs.append(TensorJob(name, tensors[name], quantizer, executor, budget, sample, share))
    report("fitting", len(names), len(names))
    return jobs


def jobs_have_sample(jobs: list[TensorJob]) -> bool:
    """Whether rate control has a subsample of these jobs' weights to search on first."""
    return any(job.sample is not None for job in jobs)


def code_jobs(
    jobs: list[TensorJob], lam: float, report: Progress, last: bool = True
) -> tuple[list[TensorRecord], list[str]]:
    """Every job's record at ``lam`` and the notes on what the values lost; ``last``: no job is coded
    again (their passes' data is dropped)."""
    records, qualities = [], []
    for i, job in enumerate(jobs):
        report("quantizing and coding", i, len(jobs))
        record, quality = job.code(lam)
        if last:
            job.fitted.keep_pass_data(0)  # (its passes are done)
        records.append(record)
        qualities.append(quality)
    report("quantizing and coding", len(jobs), len(jobs))
    counts_dtype = common_counts_dtype(records)  # one dataset holds every tensor's counts, as wide as the widest
    for i, (job, record) in enumerate(zip(jobs, records)):
        widened = record.with_counts_dtype(counts_dtype).payload_bytes
        if not record.raw and raw_payload_bytes(job.num_weights, record.num_blocks) <= widened:
            records[i], qualities[i] = job.raw_record(lam), Quality()  # its values now cost less than its code
    notes = [note for job, q in zip(jobs, qualities) for note in quality_notes(job.name, job.source.shape, q)]
    return records, notes
