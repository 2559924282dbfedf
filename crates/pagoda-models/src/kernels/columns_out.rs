//! The `[m, n]` result of a matrix product being filled in parallel: each
//! task owns a range of the `n` weight rows (columns of the result) and
//! writes its values straight into place, so no `[n, m]` scratch and no
//! transpose are needed.

use std::marker::PhantomData;

/// One task's share of an `[m, n]` result: the columns `first .. first + rows`.
pub struct ColumnsOut<'a> {
    ptr: *mut f32,
    m: usize,
    n: usize,
    first: usize,
    rows: usize,
    _result: PhantomData<&'a mut [f32]>,
}

impl ColumnsOut<'_> {
    /// Columns in this share.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Sets element `[j, first + r]`; rows past the share (a panel's padding)
    /// are dropped.
    #[inline(always)]
    pub(crate) fn set(&mut self, r: usize, j: usize, v: f32) {
        if r < self.rows {
            assert!(j < self.m);
            // SAFETY: `j < m` and `first + r < first + rows <= n`, so the
            // index is inside the `[m, n]` buffer; no other share covers
            // column `first + r` (see `parallel_columns`).
            unsafe { *self.ptr.add(j * self.n + self.first + r) = v };
        }
    }
}

/// A raw pointer that tasks on other threads may carry.
#[derive(Clone, Copy)]
struct SharedPtr(*mut f32);

// SAFETY: every task writes a disjoint set of elements through it, and the
// buffer outlives the tasks (`parallel_columns` returns after them).
unsafe impl Send for SharedPtr {}
// SAFETY: as above.
unsafe impl Sync for SharedPtr {}

/// Products smaller than this many weight-row × activation-row pairs run on
/// the calling thread: handing them to the team costs more than they take.
const PARALLEL_MIN_ROW_PAIRS: usize = 512;

/// How a product of `total` weight rows (a multiple of `align`) with `m`
/// activation rows is split across `threads`: `None` to run it on the
/// calling thread, else the weight rows per task (a multiple of `align`,
/// about four tasks per thread).
pub(crate) fn rows_per_task(total: usize, m: usize, align: usize, threads: usize) -> Option<usize> {
    if total * m < PARALLEL_MIN_ROW_PAIRS || threads <= 1 {
        return None;
    }
    Some(
        total
            .div_ceil(threads * 4)
            .clamp(8, 256)
            .next_multiple_of(align),
    )
}

/// Runs `task(part, first_row, out)` over chunks of each part's rows
/// (`parts[p]` rows; `first_row` a multiple of `align`) across the team and
/// returns each part's `[m, parts[p]]` result.
pub(crate) fn parallel_columns(
    parts: &[usize],
    align: usize,
    m: usize,
    task: impl Fn(usize, usize, ColumnsOut<'_>) + Sync,
) -> Vec<Vec<f32>> {
    let team = crate::kernels::team::Team::global();
    let total: usize = parts.iter().map(|&n| n.next_multiple_of(align)).sum();
    let mut outs: Vec<Vec<f32>> = parts.iter().map(|&n| vec![0.0f32; m * n]).collect();
    let ptrs: Vec<SharedPtr> = outs.iter_mut().map(|o| SharedPtr(o.as_mut_ptr())).collect();
    let share = |p: usize, first: usize, rows: usize| {
        assert!(first + rows <= parts[p], "a share lies inside its part");
        ColumnsOut {
            ptr: ptrs[p].0,
            m,
            n: parts[p],
            first,
            rows,
            _result: PhantomData,
        }
    };
    let Some(rows_per_task) = rows_per_task(total, m, align, team.threads()) else {
        for (p, &n) in parts.iter().enumerate() {
            task(p, 0, share(p, 0, n));
        }
        return outs;
    };
    {
        let chunks: Vec<(usize, usize)> = parts
            .iter()
            .enumerate()
            .flat_map(|(p, &n)| (0..n).step_by(rows_per_task).map(move |first| (p, first)))
            .collect();
        team.run(chunks.len(), &|i| {
            let (p, first) = chunks[i];
            task(
                p,
                first,
                share(p, first, rows_per_task.min(parts[p] - first)),
            );
        });
    }
    outs
}
