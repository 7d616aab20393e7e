from supervisor.locust import ChainlitUser
class Chat(ChainlitUser): pass
