"""The LiteLLM recipe (board/fleet/litellm.yaml): LiteLLM's real proxy in front of three rkllmd
boards, the same run as HAProxy's: concurrent chats (OpenAI's API, the one LiteLLM's proxy
serves; streamed and not), one board drained and one killed while they work, nothing
truncated or lost; and a client hanging up at the proxy aborts the generation on the board."""
from fleet import MASTER_KEY, check_hangup_aborts, check_outcomes, drain_and_kill_under_load

REQUESTS = 48
WORKERS = 12
TOKENS = 40
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def board_of(fleet):
    """The board LiteLLM sent the request to, from the api_base it names in a header."""
    by_base = {f"http://{b.address}/v1": b.name for b in fleet.boards}

    def of(headers):
        return by_base.get(headers.get("x-litellm-model-api-base", "").rstrip("/"))
    return of


def test_a_drained_and_a_killed_board_lose_no_request(litellm):
    fleet = litellm.fleet
    outcomes, drained_at = drain_and_kill_under_load(
        fleet, litellm.base, ("openai-stream", "openai"), REQUESTS, WORKERS, TOKENS,
        board_of=board_of(fleet), headers=AUTH)
    check_outcomes("LiteLLM", fleet, outcomes, REQUESTS, drained_at)


def test_a_client_hanging_up_at_the_router_aborts_the_generation(litellm):
    fleet = litellm.fleet
    check_hangup_aborts(fleet, litellm.base + "/v1/chat/completions", AUTH, board_of(fleet))
