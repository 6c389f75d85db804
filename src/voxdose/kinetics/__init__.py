"""Time-activity curves -> time-integrated activity (TIA)."""
