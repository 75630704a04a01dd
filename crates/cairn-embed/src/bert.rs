//! The BERT encoder (as in Hugging Face `BertModel`, inference only) on candle's tensors.
//!
//! Written against `candle-nn`'s layers rather than taken from `candle-transformers`: that
//! crate compiles every model it ships (hundreds), which alone would add minutes to a clean
//! build for the one encoder Cairn runs (docs/decisions/0007-search.md). The query, key and
//! value projections are fused into one matrix product per layer.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The parts of a Hugging Face BERT `config.json` inference needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn gelu() -> String {
    "gelu".into()
}
fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}

struct Embeddings {
    words: Embedding,
    positions: Embedding,
    types: Embedding,
    norm: LayerNorm,
}

struct Layer {
    qkv: Linear,
    heads: usize,
    head_size: usize,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

/// The three projections of a layer as one `Linear` of three times the width.
fn fused_qkv(vb: &VarBuilder, hidden: usize) -> Result<Linear> {
    let part = |name: &str| -> Result<(Tensor, Tensor)> {
        let p = vb.pp(name);
        Ok((p.get((hidden, hidden), "weight")?, p.get(hidden, "bias")?))
    };
    let (qw, qb) = part("query")?;
    let (kw, kb) = part("key")?;
    let (vw, vb_) = part("value")?;
    Ok(Linear::new(
        Tensor::cat(&[qw, kw, vw], 0)?,
        Some(Tensor::cat(&[qb, kb, vb_], 0)?),
    ))
}

impl Bert {
    pub fn load(vb: VarBuilder, c: &Config) -> Result<Bert> {
        if c.hidden_act != "gelu" {
            candle_core::bail!("unsupported hidden_act {} (only gelu)", c.hidden_act);
        }
        if c.position_embedding_type
            .as_deref()
            .is_some_and(|t| t != "absolute")
        {
            candle_core::bail!("only absolute position embeddings are supported");
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!("hidden_size is not a multiple of num_attention_heads");
        }
        // Some exports prefix every tensor with `bert.`.
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        let e = vb.pp("embeddings");
        let embeddings = Embeddings {
            words: embedding(c.vocab_size, c.hidden_size, e.pp("word_embeddings"))?,
            positions: embedding(
                c.max_position_embeddings,
                c.hidden_size,
                e.pp("position_embeddings"),
            )?,
            types: embedding(
                c.type_vocab_size,
                c.hidden_size,
                e.pp("token_type_embeddings"),
            )?,
            norm: layer_norm(c.hidden_size, c.layer_norm_eps, e.pp("LayerNorm"))?,
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            layers.push(Layer {
                qkv: fused_qkv(&a.pp("self"), c.hidden_size)?,
                heads: c.num_attention_heads,
                head_size: c.hidden_size / c.num_attention_heads,
                attn_out: linear(c.hidden_size, c.hidden_size, a.pp("output.dense"))?,
                attn_norm: layer_norm(c.hidden_size, c.layer_norm_eps, a.pp("output.LayerNorm"))?,
                up: linear(
                    c.hidden_size,
                    c.intermediate_size,
                    l.pp("intermediate.dense"),
                )?,
                down: linear(c.intermediate_size, c.hidden_size, l.pp("output.dense"))?,
                out_norm: layer_norm(c.hidden_size, c.layer_norm_eps, l.pp("output.LayerNorm"))?,
            });
        }
        Ok(Bert { embeddings, layers })
    }

    /// Hidden states `(batch, tokens, hidden)` for token ids and a 0/1 attention mask, both
    /// `(batch, tokens)` of u32.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let e = &self.embeddings;
        let mut x = e
            .words
            .forward(ids)?
            .broadcast_add(&e.positions.forward(&positions)?)?
            .broadcast_add(&e.types.forward(&ids.zeros_like()?)?)?;
        x = e.norm.forward(&x)?;
        // 0 where attended, a large negative number on padding: (batch, 1, 1, tokens).
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias)?;
        }
        Ok(x)
    }
}

impl Layer {
    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, n, hidden) = x.dims3()?;
        let qkv = self.qkv.forward(x)?;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(D::Minus1, i * hidden, hidden)?
                .reshape((b, n, self.heads, self.head_size))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scale = 1.0 / (self.head_size as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, n, hidden))?;
        let x = self
            .attn_norm
            .forward(&(self.attn_out.forward(&context)? + x)?)?;
        let h = self.up.forward(&x)?.gelu_erf()?;
        self.out_norm.forward(&(self.down.forward(&h)? + x)?)
    }
}
