"""Short open-ended questions shared by the backend overhead benchmarks."""
QUESTIONS = [
    "Write a short story about a robot learning to paint.",
    "Explain how a refrigerator works.",
    "What are the main causes of the French Revolution?",
    "Give me a recipe for a simple tomato soup.",
    "Describe the water cycle in a few sentences.",
    "Why is the sky blue?",
    "Write a poem about autumn leaves.",
    "Summarise the plot of Romeo and Juliet.",
]
