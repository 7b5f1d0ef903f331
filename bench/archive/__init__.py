"""One-off scripts whose question is answered and whose result is recorded (see README.md here); kept so that
a recorded result can be traced to the code that made it, not part of any current study."""
