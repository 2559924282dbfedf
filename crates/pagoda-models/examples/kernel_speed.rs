//! Micro-benchmark of pagoda's block kernels, f32 activations against
//! 8-bit activations side by side in the same run: GB/s of weights
//! streamed and GFLOP/s, for decode (1 row) and prefill-sized batches.
//!
//! `cargo run --release -p pagoda-models --example kernel_speed`

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use pagoda_models::panel_matrix::PanelMatrix;
use pagoda_models::qmatmul::{BlockFormat, QuantMatrix};
use pagoda_models::qmatmul_int8::Q8Rows;

/// The best time of several repetitions (the machine is shared).
fn best(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut secs = f64::INFINITY;
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        secs = secs.min(start.elapsed().as_secs_f64() / iters as f64);
    }
    secs
}

fn main() {
    let (rows, cols) = (1536, 576);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let t = Tensor::from_vec(w, (rows, cols), &Device::Cpu).expect("tensor");
    println!("{rows}x{cols} weights; f32 = f32 activations, int8 = 8-bit activations");
    for (format, dtype) in [
        (BlockFormat::Q4_0, GgmlDType::Q4_0),
        (BlockFormat::Q4_1, GgmlDType::Q4_1),
        (BlockFormat::Q8_0, GgmlDType::Q8_0),
    ] {
        let q = QTensor::quantize(&t, dtype).expect("quantize");
        let bytes = q.data().expect("data").into_owned();
        let size = bytes.len() as f64;
        let m = QuantMatrix::new(format, rows, cols, bytes).expect("matrix");
        let panels = PanelMatrix::from_rows(&m);
        let mut scratch = Q8Rows::default();
        for batch in [1usize, 4, 16, 64] {
            let x: Vec<f32> = (0..batch * cols)
                .map(|i| (i % 13) as f32 * 0.01 - 0.06)
                .collect();
            let iters = 1000 / batch;
            let f32_secs = best(iters, || {
                std::hint::black_box(m.matmul(&x, batch));
            });
            let int8_secs = best(iters, || {
                std::hint::black_box(panels.matmul(&x, batch, &mut scratch));
            });
            let flops = 2.0 * (rows * cols * batch) as f64;
            println!(
                "{format:?} batch {batch:>2}: f32 {:>7.1} us ({:>5.1} GB/s, {:>6.1} GFLOP/s) | int8 {:>7.1} us ({:>5.1} GB/s, {:>6.1} GFLOP/s) | int8 {:.2}x faster",
                f32_secs * 1e6,
                size / f32_secs / 1e9,
                flops / f32_secs / 1e9,
                int8_secs * 1e6,
                size / int8_secs / 1e9,
                flops / int8_secs / 1e9,
                f32_secs / int8_secs,
            );
        }
    }
}
