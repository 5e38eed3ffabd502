"""Each process wired in one place, above the packages it wires: the balancer (its gRPC servers,
the OpenAI API and the web server) and the agent."""
