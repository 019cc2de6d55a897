//! Rendering tests. The expected strings were checked against each family's official
//! Hugging Face `chat_template` (see the preset docs for where a preset departs from it).

use super::{Role, Template, Turn, PRESET_NAMES};

fn preset(name: &str) -> Template {
    Template::preset(name).unwrap_or_else(|| panic!("no preset {name}"))
}

fn sys(s: &str) -> Turn {
    Turn::new(Role::System, s)
}
fn user(s: &str) -> Turn {
    Turn::new(Role::User, s)
}
fn asst(s: &str) -> Turn {
    Turn::new(Role::Assistant, s)
}
fn tool(s: &str) -> Turn {
    Turn::new(Role::Tool, s)
}

fn conversation() -> Vec<Turn> {
    vec![
        sys("You are terse."),
        user("Hi"),
        asst("Hello!"),
        user("Bye"),
    ]
}

#[test]
fn each_preset_renders_a_conversation_exactly() {
    let cases = [
        ("chatml", "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"),
        ("qwen2", "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"),
        ("qwen2.5", "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"),
        ("qwen3", "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"),
        ("llama3", "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
        ("gemma2", "<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"),
        ("gemma3", "<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"),
        ("phi3", "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nBye<|end|>\n<|assistant|>\n"),
        ("deepseek-r1", "<｜begin▁of▁sentence｜>You are terse.<｜User｜>Hi<｜Assistant｜>Hello!<｜end▁of▁sentence｜><｜User｜>Bye<｜Assistant｜><think>\n"),
        ("minicpm", "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"),
        ("internlm2", "<s><|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"),
    ];
    assert_eq!(cases.len(), PRESET_NAMES.len());
    for (name, want) in cases {
        let r = preset(name).render(&conversation(), None);
        assert_eq!(r.full(), want, "{name}");
        assert_eq!(r.pieces.len(), 4, "{name}");
    }
}

/// The property the KV-cache reuse depends on: the previous prompt plus the model's answer is a
/// prefix of the next prompt, and what follows it there is the assistant suffix.
#[test]
fn previous_prompt_and_answer_prefix_the_next_prompt() {
    let answer = "Sure, here it is.";
    for with_system in [true, false] {
        for name in PRESET_NAMES {
            let t = preset(name);
            let mut first: Vec<Turn> = vec![user("Write a haiku.")];
            if with_system {
                first.insert(0, sys("You are a poet."));
            }
            let mut next = first.clone();
            next.extend([asst(answer), user("Another.")]);
            let before = t.render(&first, None);
            let after = t.render(&next, None).full();

            let cached = before.full() + answer;
            if *name == "deepseek-r1" {
                // The `<think>\n` of the generation prompt is not part of history turns.
                assert!(!after.starts_with(&cached));
                let matched = before.pieces.concat() + "<｜Assistant｜>";
                assert!(after.starts_with(&matched));
                continue;
            }
            assert!(after.starts_with(&cached), "{name}: {cached:?} / {after:?}");
            let rest = &after[cached.len()..];
            assert!(rest.starts_with(&t.assistant.suffix), "{name}: {rest:?}");
        }
    }
}

#[test]
fn pieces_of_earlier_turns_prefix_every_longer_rendering() {
    let long = [
        sys("S"),
        user("u1"),
        asst("a1"),
        user("u2"),
        asst("a2"),
        tool("t1"),
        asst("a3"),
        user("u3"),
    ];
    for name in PRESET_NAMES {
        let t = preset(name);
        let full = t.render(&long, None).full();
        for k in 0..=long.len() {
            let head = t.render(&long[..k], None).pieces.concat();
            assert!(full.starts_with(&head), "{name}, {k} turns");
        }
    }
}

#[test]
fn render_turn_is_the_piece_render_writes() {
    for name in PRESET_NAMES {
        let t = preset(name);
        let turns = conversation();
        let r = t.render(&turns, None);
        for i in [2, 3] {
            assert_eq!(t.render_turn(&turns[i], false), r.pieces[i], "{name} {i}");
        }
        let alone = [user("Hi")];
        let r = t.render(&alone, None);
        assert_eq!(t.render_turn(&alone[0], true), r.pieces[0], "{name}");
    }
}

#[test]
fn default_system_prompts_only_where_the_family_adds_one() {
    let turns = [user("Hi")];
    let cases = [
        ("qwen2", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        ("qwen2.5", "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        ("qwen3", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        ("chatml", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        ("minicpm", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        ("internlm2", "<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        ("llama3", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
        ("gemma2", "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"),
        ("phi3", "<|user|>\nHi<|end|>\n<|assistant|>\n"),
        ("deepseek-r1", "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>\n"),
    ];
    for (name, want) in cases {
        let r = preset(name).render(&turns, None);
        assert_eq!(r.full(), want, "{name}");
        assert_eq!(r.pieces.len(), 1, "{name}");
    }
}

#[test]
fn a_later_system_turn_does_not_replace_the_default_one() {
    let r = preset("qwen2.5").render(&[user("Hi"), sys("Be brief.")], None);
    assert_eq!(
        r.full(),
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn an_empty_conversation_is_bos_and_the_generation_prompt() {
    let r = preset("llama3").render(&[], None);
    assert!(r.pieces.is_empty());
    assert_eq!(
        r.full(),
        "<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(
        preset("qwen2.5").render(&[], None).full(),
        "<|im_start|>assistant\n"
    );
}

#[test]
fn gemma_folds_the_system_text_into_the_first_user_turn() {
    let t = preset("gemma2");
    let r = t.render(&[sys(" Be brief. "), user("  Hi \n")], None);
    // The system text is kept as given; the user text is trimmed.
    assert_eq!(
        r.pieces,
        [
            "<bos>",
            "<start_of_turn>user\n Be brief. \n\nHi<end_of_turn>\n"
        ]
    );
    assert_eq!(r.generation_prompt, "<start_of_turn>model\n");
    assert_eq!(t.render_turn(&sys("Be brief."), true), "<bos>");

    // Only the turn right after the system turn carries it.
    let r = t.render(&[sys("S"), user("u1"), asst("a1"), user("u2")], None);
    assert_eq!(r.pieces[3], "<start_of_turn>user\nu2<end_of_turn>\n");

    // A system turn nothing follows is dropped, as Gemma 3's template drops it.
    let r = t.render(&[sys("S")], None);
    assert_eq!(r.full(), "<bos><start_of_turn>model\n");
}

#[test]
fn content_is_trimmed_where_the_family_trims_it() {
    let turns = [user("  Hi\n"), asst(" Hello! \n"), user("Bye ")];
    assert_eq!(
        preset("llama3").render(&turns, None).full(),
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(
        preset("chatml").render(&turns, None).pieces[0],
        "<|im_start|>user\n  Hi\n<|im_end|>\n"
    );
}

#[test]
fn qwen_tool_results_are_tool_response_blocks_in_one_user_turn() {
    let call = "<tool_call>\n{\"name\": \"weather\", \"arguments\": {}}\n</tool_call>";
    let turns = [
        sys("S"),
        user("Weather?"),
        asst(call),
        tool("22C"),
        tool("sunny"),
    ];
    for name in ["chatml", "qwen2.5", "qwen3"] {
        let r = preset(name).render(&turns, None);
        assert_eq!(
            r.full(),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n22C\n</tool_response>\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
            "{name}"
        );
        assert_eq!(
            preset(name).render_turn(&tool("22C"), false),
            "<|im_start|>user\n<tool_response>\n22C\n</tool_response><|im_end|>\n"
        );
    }
}

#[test]
fn tool_results_in_the_other_families() {
    let cases = [
        ("qwen2", "<|im_start|>tool\n22°C, \"sunny\"\n<|im_end|>\n"),
        ("minicpm", "<|im_start|>tool\n22°C, \"sunny\"\n<|im_end|>\n"),
        (
            "internlm2",
            "<|im_start|>tool\n22°C, \"sunny\"\n<|im_end|>\n",
        ),
        // Llama 3.1+ passes tool content through `tojson`.
        (
            "llama3",
            "<|start_header_id|>ipython<|end_header_id|>\n\n\"22°C, \\\"sunny\\\"\\n\"<|eot_id|>",
        ),
        // No tool role: a user turn.
        (
            "gemma2",
            "<start_of_turn>user\n22°C, \"sunny\"<end_of_turn>\n",
        ),
        ("phi3", "<|user|>\n22°C, \"sunny\"\n<|end|>\n"),
        ("deepseek-r1", "<｜User｜>22°C, \"sunny\"\n"),
    ];
    for (name, want) in cases {
        let t = preset(name);
        assert_eq!(
            t.render_turn(&tool("22°C, \"sunny\"\n"), false),
            want,
            "{name}"
        );
    }
}

#[test]
fn qwen3_drops_reasoning_from_history_so_the_prefix_property_needs_an_answer_without_it() {
    let t = preset("qwen3");
    let answer = "<think>\nThe user greets.\n</think>\n\nHello!";
    let first = [user("Hi")];
    let next = [user("Hi"), asst(answer), user("Bye")];
    let r = t.render(&next, None);
    assert_eq!(r.pieces[1], "<|im_start|>assistant\nHello!<|im_end|>\n");
    let cached = t.render(&first, None).full() + answer;
    assert!(!r.full().starts_with(&cached));

    // With thinking off, the empty think block of the prompt is not kept either.
    let off = t.render(&first, Some(false)).full() + "Hello!";
    assert!(!t.render(&next, Some(false)).full().starts_with(&off));
}

#[test]
fn qwen3_keeps_reasoning_in_the_round_after_the_last_user_turn() {
    let t = preset("qwen3");
    let cases = [
        (
            "<think>\nCall it.\n</think>\n\n<tool_call>x</tool_call>",
            "<|im_start|>assistant\n<think>\nCall it.\n</think>\n\n<tool_call>x</tool_call><|im_end|>\n",
        ),
        (
            "<think>\n\n\nCall it.\n\n</think>\n\n\n<tool_call>x</tool_call>",
            "<|im_start|>assistant\n<think>\nCall it.\n</think>\n\n<tool_call>x</tool_call><|im_end|>\n",
        ),
        (
            "<think>\n\n</think>\n\n<tool_call>x</tool_call>",
            "<|im_start|>assistant\n<tool_call>x</tool_call><|im_end|>\n",
        ),
        (
            "<tool_call>x</tool_call>",
            "<|im_start|>assistant\n<tool_call>x</tool_call><|im_end|>\n",
        ),
    ];
    for (content, want) in cases {
        let turns = [user("Weather?"), asst(content), tool("22C")];
        assert_eq!(t.render(&turns, None).pieces[1], want, "{content:?}");
    }
    // A user turn that only carries tool responses is not a query.
    let turns = [
        user("Weather?"),
        asst("<think>\nR\n</think>\n\nC"),
        user("<tool_response>\n22C\n</tool_response>"),
    ];
    assert_eq!(
        t.render(&turns, None).pieces[1],
        "<|im_start|>assistant\n<think>\nR\n</think>\n\nC<|im_end|>\n"
    );
}

#[test]
fn deepseek_r1_drops_reasoning_from_every_assistant_turn() {
    let t = preset("deepseek-r1");
    // The model's answer to a prompt that opened `<think>\n`.
    let answer = "The user greets.\n</think>\n\nHello!";
    let r = t.render(&[user("Hi"), asst(answer), user("Bye")], None);
    assert_eq!(
        r.pieces[1],
        "<｜Assistant｜>\n\nHello!<｜end▁of▁sentence｜>"
    );
    assert_eq!(
        t.render_turn(&asst("a</think>b</think>c"), false),
        "<｜Assistant｜>c<｜end▁of▁sentence｜>"
    );
}

#[test]
fn thinking_switches_only_where_the_family_has_a_switch() {
    let turns = [user("Hi")];
    let gen = |name: &str, thinking| preset(name).render(&turns, thinking).generation_prompt;
    assert_eq!(gen("qwen3", None), "<|im_start|>assistant\n");
    assert_eq!(gen("qwen3", Some(true)), "<|im_start|>assistant\n");
    assert_eq!(
        gen("qwen3", Some(false)),
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
    assert_eq!(gen("deepseek-r1", None), "<｜Assistant｜><think>\n");
    assert_eq!(
        gen("deepseek-r1", Some(false)),
        "<｜Assistant｜><think>\n\n</think>\n\n"
    );
    for name in PRESET_NAMES {
        if !["qwen3", "deepseek-r1"].contains(name) {
            assert_eq!(gen(name, Some(false)), gen(name, None), "{name}");
            assert_eq!(gen(name, Some(true)), gen(name, None), "{name}");
        }
    }
}

#[test]
fn a_preamble_is_written_untrimmed_before_the_content_and_folds_with_it() {
    let with_preamble = |mut turn: Turn, preamble: &str| {
        turn.preamble = preamble.to_owned();
        turn
    };
    let turns = [
        with_preamble(sys(" terse "), "Env\n\n"),
        with_preamble(user(" Hi "), "Tools\n\n"),
    ];
    assert_eq!(
        preset("llama3").render(&turns, None).full(),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnv\n\nterse<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nTools\n\nHi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(
        preset("gemma3").render(&turns, None).full(),
        "<bos><start_of_turn>user\nEnv\n\n terse \n\nTools\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
}

fn image_at(at: usize) -> crate::chat::PlacedImage {
    crate::chat::PlacedImage {
        at,
        image: crate::vision::image::ImageInput {
            bytes: std::sync::Arc::from(&b"x"[..]),
            format: crate::vision::image::ImageFormat::Png,
            width: 1,
            height: 1,
        },
    }
}

#[test]
fn images_placed_before_the_text_go_first() {
    let mut first = user("What is this?");
    first.images = vec![image_at(0), image_at(0)];
    let r = preset("qwen2").render(&[first, asst("Cats."), user("And?")], None);
    // The first piece carries the default system prompt too.
    assert!(
        r.pieces[0].ends_with("<|im_start|>user\n<image><image>What is this?<|im_end|>\n"),
        "{:?}",
        r.pieces[0]
    );
    assert_eq!(r.pieces[2], "<|im_start|>user\nAnd?<|im_end|>\n");
}

#[test]
fn images_keep_their_place_among_the_text() {
    // Parts [text "Compare", image, text "with", image].
    let mut turn = user("Comparewith");
    turn.images = vec![image_at(7), image_at(11)];
    let r = preset("qwen2").render(&[sys("S"), turn], None);
    assert_eq!(
        r.pieces[1],
        "<|im_start|>user\nCompare<image>with<image><|im_end|>\n"
    );
}

#[test]
fn images_in_trimmed_whitespace_go_to_the_texts_edge() {
    // Parts [text " ", image, text " Compare ", image, image, text " "]: llama3 trims content.
    let mut turn = user("  Compare  ");
    turn.images = vec![image_at(1), image_at(10), image_at(10)];
    let r = preset("llama3").render(&[sys("S"), turn.clone()], None);
    assert_eq!(
        r.pieces[1],
        "<|start_header_id|>user<|end_header_id|>\n\n<image>Compare<image><image><|eot_id|>"
    );
    // Inside the text, after the trimmed leading whitespace.
    turn.images = vec![image_at(5)];
    let r = preset("llama3").render(&[sys("S"), turn], None);
    assert_eq!(
        r.pieces[1],
        "<|start_header_id|>user<|end_header_id|>\n\nCom<image>pare<|eot_id|>"
    );
}
