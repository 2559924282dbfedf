//! Admission: what a request must fit in (the vocabulary, the model's
//! context window, the KV pool) and the typed refusal when it does not.
//! The limits are fixed when the engine is built. A request is checked
//! once, synchronously, before it is queued: [`EngineLimits::admit`] turns
//! a [`Request`] into an [`Admitted`] one, the only kind the engine queues
//! ([`crate::EngineHandle::submit`] and [`crate::EngineCore::add_request`]
//! take either, and check a plain [`Request`] themselves). A request that
//! can never run is refused at once and never reaches the engine thread.

use crate::request::Request;
use crate::scheduler::Schedule;

/// The limits a request is checked against, known once the KV pool is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Token ids are below this.
    pub vocab_size: usize,
    /// The model's context window (`max_position_embeddings`).
    pub model_context: usize,
    /// Positions the whole KV pool holds (one sequence can never exceed it).
    pub pool_tokens: usize,
    /// Sequences running at once (`--max-num-seqs`): a request's `n`
    /// choices run together, so `n` may not exceed it.
    pub max_seqs: usize,
    /// Sequences waiting at once (`--max-waiting`): a request whose
    /// sequences outnumber it could never be queued whole.
    pub max_waiting: usize,
}

/// Which limit a request exceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The model's context window.
    ContextWindow,
    /// The KV pool, smaller than the context window.
    KvPool,
}

impl Limit {
    /// How the limit is named in messages.
    pub fn name(self) -> &'static str {
        match self {
            Limit::ContextWindow => "the model's context window",
            Limit::KvPool => "the KV cache pool",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which limit on sequences a request exceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceLimit {
    /// Sequences running at once (`--max-num-seqs`), which bounds `n`.
    Running,
    /// Sequences queued at once (`--max-waiting`), which bounds prompts × `n`.
    Waiting,
}

impl std::fmt::Display for SequenceLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SequenceLimit::Running => "--max-num-seqs (sequences running at once)",
            SequenceLimit::Waiting => "--max-waiting (sequences queued at once)",
        })
    }
}

/// Why the engine refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Too many requests are waiting; try again later.
    #[error("the engine's queue is full")]
    QueueFull,
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Closed,
    /// The prompt has no tokens.
    #[error("the prompt is empty: it has no tokens")]
    EmptyPrompt,
    /// `n` or `max_tokens` is zero.
    #[error("n and max_tokens must be at least 1")]
    NothingToGenerate,
    /// A prompt token id is not in the vocabulary.
    #[error("token id {token} is outside the vocabulary of {vocab_size}")]
    UnknownToken {
        /// The id.
        token: u32,
        /// The vocabulary's size.
        vocab_size: usize,
    },
    /// A `logit_bias` token id is not in the vocabulary.
    #[error("logit_bias names token id {token}, outside the vocabulary of {vocab_size}")]
    UnknownBiasToken {
        /// The id.
        token: u32,
        /// The vocabulary's size.
        vocab_size: usize,
    },
    /// The prompt alone leaves no room for one generated token.
    #[error("the prompt has {prompt} tokens; {limit} holds {max}")]
    PromptTooLong {
        /// Tokens in the prompt.
        prompt: usize,
        /// Positions the limit holds.
        max: usize,
        /// Which limit.
        limit: Limit,
    },
    /// Prompt plus `max_tokens` do not fit.
    #[error(
        "the prompt ({prompt} tokens) plus max_tokens ({max_tokens}) needs {} positions; {limit} holds {max}",
        prompt + max_tokens
    )]
    TooLong {
        /// Tokens in the prompt.
        prompt: usize,
        /// Tokens asked for.
        max_tokens: usize,
        /// Positions the limit holds.
        max: usize,
        /// Which limit.
        limit: Limit,
    },
    /// A thinking budget without the ids that close the thinking.
    #[error("a thinking budget needs the ids that close the thinking")]
    NoThinkingClose,
    /// More sequences (prompts × `n`) than the engine can ever hold at once.
    #[error("the request asks for {sequences} sequences (prompts × n); {limit} is {max}")]
    TooManySequences {
        /// Sequences asked for.
        sequences: usize,
        /// The limit's value.
        max: usize,
        /// Which limit.
        limit: SequenceLimit,
    },
}

/// A request checked against an engine's limits: the only kind the engine
/// queues.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    request: Request,
    limits: EngineLimits,
    schedule: Schedule,
}

impl Admitted {
    /// The request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The same request at `schedule`'s place in the order of who runs
    /// (its priority and tenant; by default priority 0 of tenant 0).
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Its place in the order of who runs.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// The request, taken back.
    pub fn into_request(self) -> Request {
        self.request
    }
}

/// What [`crate::EngineHandle::submit`] and [`crate::EngineCore::add_request`]
/// take: a plain [`Request`] (checked there) or an [`Admitted`] one (checked
/// already; again only if it was checked against other limits).
pub trait Admit {
    /// The request admitted under `limits`, or why it cannot be.
    fn admit(self, limits: &EngineLimits) -> Result<Admitted, SubmitError>;
}

impl Admit for Request {
    fn admit(self, limits: &EngineLimits) -> Result<Admitted, SubmitError> {
        limits.admit(self)
    }
}

impl Admit for Admitted {
    fn admit(self, limits: &EngineLimits) -> Result<Admitted, SubmitError> {
        if self.limits == *limits {
            Ok(self)
        } else {
            Ok(limits.admit(self.request)?.with_schedule(self.schedule))
        }
    }
}

impl EngineLimits {
    /// Checks `request` (see [`Self::check`]) and marks it admitted.
    pub fn admit(&self, request: Request) -> Result<Admitted, SubmitError> {
        self.check(&request)?;
        Ok(Admitted {
            request,
            limits: *self,
            schedule: Schedule::default(),
        })
    }

    /// The positions one sequence may reach: the context window, or the
    /// pool where that is smaller, and which of the two it is.
    pub fn served_context(&self) -> (usize, Limit) {
        if self.pool_tokens < self.model_context {
            (self.pool_tokens, Limit::KvPool)
        } else {
            (self.model_context, Limit::ContextWindow)
        }
    }

    /// The most tokens a prompt of `prompt_len` tokens leaves room for (the
    /// default `max_tokens`); 0 when the prompt alone fills the context.
    pub fn max_new_tokens(&self, prompt_len: usize) -> usize {
        self.served_context().0.saturating_sub(prompt_len)
    }

    /// Whether `sequences` sequences of one request (its prompts × `n`)
    /// can ever be queued and run: `n` at most the running sequences, the
    /// whole at most the waiting queue. A request refused here could never
    /// run, so it is a 400, not a 429.
    pub fn check_sequences(&self, n: usize, sequences: usize) -> Result<(), SubmitError> {
        if n > self.max_seqs {
            return Err(SubmitError::TooManySequences {
                sequences: n,
                max: self.max_seqs,
                limit: SequenceLimit::Running,
            });
        }
        if sequences > self.max_waiting {
            return Err(SubmitError::TooManySequences {
                sequences,
                max: self.max_waiting,
                limit: SequenceLimit::Waiting,
            });
        }
        Ok(())
    }

    /// Checks `request` against the limits: every refusal names the numbers.
    pub fn check(&self, request: &Request) -> Result<(), SubmitError> {
        let prompt = request.prompt.len();
        if prompt == 0 {
            return Err(SubmitError::EmptyPrompt);
        }
        if request.n == 0 || request.stop.max_tokens == 0 {
            return Err(SubmitError::NothingToGenerate);
        }
        self.check_sequences(request.n, request.n)?;
        let vocab_size = self.vocab_size;
        let outside = |&t: &u32| t as usize >= vocab_size;
        if let Some(&token) = request.prompt.iter().find(|t| outside(t)) {
            return Err(SubmitError::UnknownToken { token, vocab_size });
        }
        let mut bias = request.sampling.logit_bias.iter().map(|(t, _)| t);
        if let Some(&token) = bias.find(|t| outside(t)) {
            return Err(SubmitError::UnknownBiasToken { token, vocab_size });
        }
        if request
            .reasoning
            .as_ref()
            .is_some_and(|r| r.close_with.is_empty())
        {
            return Err(SubmitError::NoThinkingClose);
        }
        let (max, limit) = self.served_context();
        if prompt >= max {
            return Err(SubmitError::PromptTooLong { prompt, max, limit });
        }
        let max_tokens = request.stop.max_tokens;
        // Which limit is named: the context window whenever the request
        // exceeds it, the pool only when the request fits the window.
        for (max, limit) in [
            (self.model_context, Limit::ContextWindow),
            (self.pool_tokens, Limit::KvPool),
        ] {
            if prompt + max_tokens > max {
                return Err(SubmitError::TooLong {
                    prompt,
                    max_tokens,
                    max,
                    limit,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::StopCondition;
    use crate::sampler::SamplingParams;

    const LIMITS: EngineLimits = EngineLimits {
        vocab_size: 100,
        model_context: 64,
        pool_tokens: 32,
        max_seqs: 4,
        max_waiting: 6,
    };

    fn request(prompt: usize, max_tokens: usize) -> Request {
        Request {
            prompt: vec![1; prompt],
            sampling: SamplingParams::greedy(),
            stop: StopCondition {
                max_tokens,
                min_tokens: 0,
                eos_token_ids: vec![2],
                stop_token_ids: Vec::new(),
                ignore_eos: false,
            },
            n: 1,
            reasoning: None,
            grammar: None,
        }
    }

    #[test]
    fn the_served_context_is_the_smaller_of_window_and_pool() {
        assert_eq!(LIMITS.served_context(), (32, Limit::KvPool));
        assert_eq!(LIMITS.max_new_tokens(10), 22);
        assert_eq!(LIMITS.max_new_tokens(40), 0);
        let roomy = EngineLimits {
            pool_tokens: 1000,
            ..LIMITS
        };
        assert_eq!(roomy.served_context(), (64, Limit::ContextWindow));
        assert_eq!(roomy.max_new_tokens(10), 54);
    }

    #[test]
    fn an_admitted_request_is_checked_again_only_under_other_limits() {
        let admitted = LIMITS.admit(request(10, 22)).expect("fits");
        assert_eq!(admitted.clone().admit(&LIMITS), Ok(admitted.clone()));
        let smaller = EngineLimits {
            pool_tokens: 16,
            ..LIMITS
        };
        assert!(matches!(
            admitted.admit(&smaller),
            Err(SubmitError::TooLong {
                limit: Limit::KvPool,
                max: 16,
                ..
            })
        ));
        assert_eq!(request(0, 1).admit(&LIMITS), Err(SubmitError::EmptyPrompt));
    }

    #[test]
    fn a_request_that_could_never_be_queued_whole_is_refused() {
        let mut r = request(4, 4);
        r.n = 4;
        assert!(LIMITS.check(&r).is_ok());
        r.n = 5;
        let e = LIMITS.check(&r).expect_err("n past --max-num-seqs");
        assert!(
            e.to_string().contains("--max-num-seqs") && e.to_string().ends_with("is 4"),
            "{e}"
        );
        assert!(LIMITS.check_sequences(2, 6).is_ok());
        let e = LIMITS
            .check_sequences(2, 8)
            .expect_err("past --max-waiting");
        assert!(
            e.to_string().contains("8 sequences") && e.to_string().contains("is 6"),
            "{e}"
        );
    }

    #[test]
    fn refusals_name_the_limit_and_the_numbers() {
        assert_eq!(LIMITS.check(&request(10, 22)), Ok(()));
        let e = LIMITS.check(&request(10, 23)).expect_err("over the pool");
        assert_eq!(
            e,
            SubmitError::TooLong {
                prompt: 10,
                max_tokens: 23,
                max: 32,
                limit: Limit::KvPool
            }
        );
        assert_eq!(
            e.to_string(),
            "the prompt (10 tokens) plus max_tokens (23) needs 33 positions; the KV cache pool holds 32"
        );
        assert!(matches!(
            LIMITS.check(&request(10, 100)),
            Err(SubmitError::TooLong {
                limit: Limit::ContextWindow,
                max: 64,
                ..
            })
        ));
        assert_eq!(
            LIMITS.check(&request(32, 1)),
            Err(SubmitError::PromptTooLong {
                prompt: 32,
                max: 32,
                limit: Limit::KvPool
            })
        );
        assert_eq!(LIMITS.check(&request(0, 1)), Err(SubmitError::EmptyPrompt));
        assert_eq!(
            LIMITS.check(&request(1, 0)),
            Err(SubmitError::NothingToGenerate)
        );
        let mut bad = request(3, 1);
        bad.prompt[1] = 100;
        assert_eq!(
            LIMITS.check(&bad),
            Err(SubmitError::UnknownToken {
                token: 100,
                vocab_size: 100
            })
        );
        let mut bias = request(3, 1);
        bias.sampling.logit_bias = vec![(4000, 1.0)];
        assert!(matches!(
            LIMITS.check(&bias),
            Err(SubmitError::UnknownBiasToken { token: 4000, .. })
        ));
    }
}
