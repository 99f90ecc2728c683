"""smsinvite: survey invitations by SMS."""
