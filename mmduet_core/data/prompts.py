"""Instruction lists of the upstream training datasets (spec §4.2, §4.4), reused for benchmark prompts."""

from __future__ import annotations

DVC_INSTRUCTIONS = (
    "Please concisely narrate the video in real time.",
    "Help me to illustrate my view in short.",
    "Please simply describe what do you see.",
    "Continuously answer what you observed with simple text.",
    "Do concise real-time narration.",
    "Hey assistant, do you know the current video content? Reply me concisely.",
    "Simply interpret the scene for me.",
    "What can you tell me about? Be concise.",
    "Use simple text to explain what is shown in front of me.",
    "What is the action now? Please response in short.",
)

GROUNDING_TEMPLATES = (
    "%s",
    "%s",
    "What segment of the video addresses the topic '%s'?",
    "At what timestamp can I find information about '%s' in the video?",
    "Can you highlight the section of the video that pertains to '%s'?",
    "Which moments in the video discuss '%s' in detail?",
    "Identify the parts that mention '%s'.",
    "Where in the video is '%s' demonstrated or explained?",
    "What parts are relevant to the concept of '%s'?",
    "Which clips in the video relate to the query '%s'?",
    "Can you point out the video segments that cover '%s'?",
    "What are the key timestamps in the video for the topic '%s'?",
)
