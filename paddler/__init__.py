"""Paddler: a slot-aware load balancer and serving platform for LLMs on llama.cpp, over gRPC."""
