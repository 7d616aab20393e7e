"""A Locust user with its own conversation: measured chat turns and thread switches."""

from locust import task

from supervisor.locust import ChainlitUser


class Conversation(ChainlitUser):
    # supervisor loadtest's option names; the command line still overrides them
    options = {"message": "hello", "think_time": 0.1}

    @task
    def two_threads(self) -> None:
        first, second = self.session.threads[:2]
        reply = self.session.chat("what is a supervisor tree?")
        if reply is None:
            return  # failed: already reported to Locust with its error type
        self.session.resume(second)
        self.session.chat(f"and here? (the other thread said {len(reply.text)} chars)")
        self.session.resume(first)
