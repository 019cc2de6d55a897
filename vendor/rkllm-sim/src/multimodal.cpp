// RKLLM_INPUT_MULTIMODAL input: images given as embeddings (a vision encoder's output), placed
// where the prompt has the image placeholder, as upstream's multimodal demo uses it
// (rknn-llm, examples/multimodal_model_demo/deploy/src/main.cpp: "<image>What is in the
// image?", with image_start/image_end/image_content "<|vision_start|>", "<|vision_end|>",
// "<|image_pad|>" for Qwen2-VL).
#include <cstdio>
#include <string_view>

#include "handle.h"
#include "trace.h"

namespace sim SIM_HIDDEN {
namespace {

constexpr std::string_view kImagePlaceholder = "<image>";

size_t count_placeholders(std::string_view text) {
    size_t n = 0;
    for (size_t at = text.find(kImagePlaceholder); at != std::string_view::npos;
         at = text.find(kImagePlaceholder, at + kImagePlaceholder.size())) {
        ++n;
    }
    return n;
}

uint64_t hash_floats(const float* data, size_t n) {
    uint64_t h = 14695981039346656037ull;
    const auto* p = reinterpret_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n * sizeof(float); ++i) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

[[maybe_unused]] String or_empty(const char* s) { return s != nullptr ? String(s) : String(); }

}  // namespace

bool Handle::take_images(const RKLLMMultiModalInput& mm, RunRequest& req) const {
#if RKLLM_SIM_ABI_MINOR >= 3
    const float* embed = mm.image.image_embed;
    const size_t n_image = mm.image.n_image;
    const size_t n_tokens = mm.image.n_image_tokens;
    const String start = or_empty(mm.image.image_start);
    const String end = or_empty(mm.image.image_end);
    const String content = or_empty(mm.image.image_content);
    const size_t width = mm.image.image_width;
    const size_t height = mm.image.image_height;
#else  // 1.2: the tags were set once, in RKLLMParam
    const float* embed = mm.image_embed;
    const size_t n_image = mm.n_image;
    const size_t n_tokens = mm.n_image_tokens;
    const String start = settings_.img_start;
    const String end = settings_.img_end;
    const String content = settings_.img_content;
    const size_t width = mm.image_width;
    const size_t height = mm.image_height;
#endif
    const size_t dim = static_cast<size_t>(model_.hidden_size);
    const size_t placeholders = count_placeholders(req.text);
    if (!trace_path_.empty()) {
        try {
            JsonLine j("multimodal");
            j.num("handle", id_)
                .num("n_image", static_cast<int64_t>(n_image))
                .num("n_image_tokens", static_cast<int64_t>(n_tokens))
                .num("embed", static_cast<int64_t>(n_image * n_tokens * dim))
                .num("embed_dim", static_cast<int64_t>(dim))
                .num("placeholders", static_cast<int64_t>(placeholders))
                .str("image_start", start)
                .str("image_end", end)
                .str("image_content", content)
                .num("image_width", static_cast<int64_t>(width))
                .num("image_height", static_cast<int64_t>(height));
            trace_write(trace_path_, j.finish());
        } catch (const std::exception&) {  // tracing never fails a run
        }
    }
    if (n_image == 0) return true;  // video only (1.3), or no media at all
    if (embed == nullptr || n_tokens == 0 || n_tokens > 65536 || n_image > 64) {
        std::fprintf(stderr, "E rkllm: invalid image input (%zu images of %zu tokens)\n", n_image,
                     n_tokens);
        return false;
    }
    // The buffer holds n_image * n_image_tokens * hidden_size floats: the runtime has no other
    // way to know its length, so a model converted for another count reads the wrong amount.
    if (model_.image_tokens > 0 && model_.image_tokens_checked &&
        n_tokens != static_cast<size_t>(model_.image_tokens)) {
        std::fprintf(stderr,
                     "E rkllm: n_image_tokens %zu does not match the model's %d image tokens of "
                     "%zu floats\n",
                     n_tokens, model_.image_tokens, dim);
        return false;
    }
    if (placeholders != n_image) {
        std::fprintf(stderr, "E rkllm: the prompt has %zu %s placeholders for %zu images\n",
                     placeholders, String(kImagePlaceholder).c_str(), n_image);
        return false;
    }
    req.n_image = n_image;
    req.n_image_tokens = n_tokens;
    req.image_start = start;
    req.image_end = end;
    req.image_key = hash_floats(embed, n_image * n_tokens * dim);
    return true;
}

void Handle::append_images(const String& text, const RunRequest& req, Tokens& out) {
    std::string_view rest(text);
    for (;;) {
        const size_t at = rest.find(kImagePlaceholder);
        const Tokens before = tokenize(String(rest.substr(0, at)));
        out.insert(out.end(), before.begin(), before.end());
        if (at == std::string_view::npos) break;
        const Tokens start = tokenize(req.image_start);
        out.insert(out.end(), start.begin(), start.end());
        out.insert(out.end(), req.n_image_tokens, kOpaqueToken);
        const Tokens end = tokenize(req.image_end);
        out.insert(out.end(), end.begin(), end.end());
        rest = rest.substr(at + kImagePlaceholder.size());
    }
}

}  // namespace sim
